"""The training loop and evaluation (CLIP-LoRA protocol, REFERENCE.md section 2)."""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm import tqdm

from batching import SeededAugmentation, TrainBatchSampler
from checkpointing import TrainCheckpoint
from datasets import FewShotDataset, ImageDataset
from distributed import Distributed
from metrics import accuracy_percent, count_correct
from model import ClipBundle
from precision import Precision
from run_utils import UserError

log = logging.getLogger(__name__)

LOGIT_SCALE = 100.0  # CLIP's learned temperature, fixed as in CLIP-LoRA
WEIGHT_DECAY = 1e-2
BETAS = (0.9, 0.999)
MIN_LR = 1e-6


def train_transform(bundle: ClipBundle) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(bundle.image_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(bundle.image_mean, bundle.image_std),
    ])


def test_transform(bundle: ClipBundle) -> T.Compose:
    return T.Compose([
        T.Resize(bundle.resize_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(bundle.image_size),
        T.ToTensor(),
        T.Normalize(bundle.image_mean, bundle.image_std),
    ])


def test_loader(data: FewShotDataset, bundle: ClipBundle, args: argparse.Namespace,
                device: torch.device) -> DataLoader:
    dataset = ImageDataset(data.test, data.load_image, test_transform(bundle))
    return DataLoader(dataset, batch_size=max(args.batch_size, 64), num_workers=args.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)


def _unchanged(image):
    return image  # the random transform is applied by SeededAugmentation


def train_loader(data: FewShotDataset, bundle: ClipBundle, args: argparse.Namespace,
                 device: torch.device, rank: int = 0, world: int = 1) -> DataLoader:
    """Endless micro-batches of batch_size / gradient_accumulation_steps images (see batching.py)."""
    micro_batch = args.batch_size // args.gradient_accumulation_steps
    sampler = TrainBatchSampler(len(data.train), micro_batch, args.seed, rank, world)
    if sampler.batch % world:
        raise UserError(f"micro-batches of {sampler.batch} images cannot be shared equally by {world} "
                        "processes; choose --batch_size / --gradient_accumulation_steps (or, with fewer "
                        "train images than that, shots x classes) divisible by the process count")
    dataset = SeededAugmentation(ImageDataset(data.train, data.load_image, _unchanged),
                                 train_transform(bundle))
    return DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)


class ClassPrompts:
    """Tokenised class prompts, padded to the longest prompt rather than CLIP's 77 tokens.

    CLIP's text tower is causal and pools at the end-of-text token, so padding after that token
    cannot change the features; shorter padding only removes work.
    """

    def __init__(self, tokenizer, prompts: list[str], device: torch.device):
        enc = tokenizer(prompts, padding="longest", truncation=True, max_length=77, return_tensors="pt")
        self.input_ids = enc["input_ids"].to(device)
        self.attention_mask = enc["attention_mask"].to(device)

    def features(self, model: torch.nn.Module) -> torch.Tensor:
        out = model.get_text_features(input_ids=self.input_ids, attention_mask=self.attention_mask)
        return F.normalize(_pooled(out), dim=-1)


def _pooled(output) -> torch.Tensor:
    # transformers >= 5 returns an output object from get_*_features; older versions a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(_pooled(model.get_image_features(pixel_values=images)), dim=-1)


def has_adapters(model: torch.nn.Module, tower: str) -> bool:
    """Whether `tower` ('text_model' or 'vision_model') carries adapter weights (trainable or loaded)."""
    return any("lora_" in name and tower in name for name, _ in model.named_parameters())


def _encoded_batches(model: torch.nn.Module, loader: DataLoader, device: torch.device, desc: str,
                     cache: list | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image features, labels) per test batch; read from `cache` when an earlier pass filled it."""
    if cache:
        yield from cache
        return
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=None):
        encoded = (image_features(model, images.to(device, non_blocking=True)), labels.to(device, non_blocking=True))
        if cache is not None:
            cache.append(encoded)
        yield encoded


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, prompts: ClassPrompts,
             precision: Precision, desc: str = "eval", image_cache: list | None = None) -> float:
    """Top-1 accuracy (percent) of the model on the loader's images.

    `image_cache`: a list shared by two evaluations whose vision towers are the same frozen
    weights (zero-shot and test with text-only adapters): the first fills it with each batch's
    image features, the second reads them instead of running the vision tower again.
    """
    model.eval()
    correct = total = 0
    with precision.autocast():
        text = prompts.features(model)
        for features, labels in _encoded_batches(model, loader, precision.device, desc, image_cache):
            correct += count_correct(LOGIT_SCALE * features @ text.T, labels)
            total += labels.numel()
    return accuracy_percent(correct, total)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def train(model: torch.nn.Module, loader: DataLoader, prompts: ClassPrompts, args: argparse.Namespace,
          precision: Precision, dist: Distributed | None = None,
          checkpoint: TrainCheckpoint | None = None) -> TrainResult:
    """AdamW on the adapter weights with a cosine schedule, for n_iters x shots optimizer steps."""
    dist = dist or Distributed(rank=0, world=1, device=precision.device)
    total_steps = args.n_iters * args.shots
    accum = args.gradient_accumulation_steps
    device = precision.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=MIN_LR)
    scaler = precision.grad_scaler()

    # With adapters in the text tower the prompts must be re-encoded with gradients every
    # micro-step; caching them would silently freeze those adapters.
    reencode_text = has_adapters(model, "text_model")
    if not reencode_text:
        model.eval()
        with torch.no_grad(), precision.autocast():
            cached_text = prompts.features(model)

    saved = checkpoint.load() if checkpoint is not None and args.resume else None
    first_step = saved["step"] if saved else 0
    losses = saved["losses"] if saved else []
    loader.batch_sampler.start = first_step * accum
    batches = iter(loader)
    if saved:
        # After the iterator exists: creating it draws from the global RNG.
        checkpoint.restore(saved, model, optimizer, scheduler, scaler)

    model.train()
    start = time.perf_counter() - (saved["seconds"] if saved else 0.0)
    for step in tqdm(range(first_step, total_steps), desc=f"train {args.mode}", leave=False,
                     disable=None if dist.is_main else True, initial=first_step, total=total_steps):
        step_loss = 0.0
        for _ in range(accum):
            images, labels = next(batches)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with precision.autocast():
                text = prompts.features(model) if reencode_text else cached_text
                logits = LOGIT_SCALE * image_features(model, images) @ text.T
                loss = F.cross_entropy(logits.float(), labels) / accum
            scaler.scale(loss).backward()
            step_loss += loss.item()
        dist.average_gradients(params)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(step_loss)
        if checkpoint is not None and dist.is_main and checkpoint.due(step + 1, total_steps):
            checkpoint.save(step + 1, model, optimizer, scheduler, scaler, losses, time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TrainResult(steps=total_steps, seconds=time.perf_counter() - start, losses=losses)
