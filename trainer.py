"""The training loop: AdamW on the adapter weights, cosine schedule, n_iters x shots optimizer steps.

The protocol (docs/protocol.md, "Training"): CLIP-LoRA's optimizer and schedule, class prompts
re-encoded with gradients at every step when the text tower has adapters, one optimizer step per
batch of `batch_size` images, which may be split into micro-batches (gradient accumulation) and
across processes (distributed.py) without changing the update.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from checkpointing import TrainCheckpoint
from config import TrainConfig
from distributed import Distributed
from features import ClassPrompts, has_adapters, image_features, logits
from precision import Precision
from protocol import BETAS, MIN_LR, WEIGHT_DECAY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step did, handed to the `on_step` callbacks of `train` (e.g. tracking.py)."""
    step: int            # 1-based: the number of optimizer steps taken so far
    total_steps: int
    loss: float          # mean loss of the step's images
    lr: float            # the learning rate the step used
    seconds: float       # wall time of the step, input wait included
    images: int          # images the step trained on (all processes)
    grad_scale: float | None  # GradScaler's scale after the step (fp16 only)


StepCallback = Callable[[StepRecord], None]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def train(model: torch.nn.Module, loader: DataLoader, prompts: ClassPrompts, config: TrainConfig,
          precision: Precision, dist: Distributed | None = None, checkpoint: TrainCheckpoint | None = None,
          resume: bool = False, desc: str = "train", on_step: Sequence[StepCallback] = ()) -> TrainResult:
    """Train the model's trainable (adapter) weights on the loader's micro-batches.

    `loader.batch_sampler` is a batching.TrainBatchSampler; `resume` continues from `checkpoint`;
    each of `on_step` is called after every optimizer step with its StepRecord.
    """
    dist = dist or Distributed(rank=0, world=1, device=precision.device)
    sampler = loader.batch_sampler
    total_steps = config.total_steps
    accum = sampler.micro_batches_per_step
    device = precision.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=MIN_LR)
    scaler = precision.grad_scaler()

    # With adapters in the text tower the prompts must be re-encoded with gradients every
    # micro-step; caching them would silently freeze those adapters.
    reencode_text = has_adapters(model, "text_model")
    if not reencode_text:
        model.eval()
        with torch.no_grad(), precision.autocast():
            cached_text = prompts.features(model)

    saved = checkpoint.load() if checkpoint is not None and resume else None
    first_step = saved["step"] if saved else 0
    losses = saved["losses"] if saved else []
    sampler.start_at_step(first_step)
    batches = iter(loader)
    if saved:
        # After the iterator exists: creating it draws from the global RNG.
        checkpoint.restore(saved, model, optimizer, scheduler, scaler)

    model.train()
    start = time.perf_counter() - (saved["seconds"] if saved else 0.0)
    for step in tqdm(range(first_step, total_steps), desc=desc, leave=False,
                     disable=None if dist.is_main else True, initial=first_step, total=total_steps):
        step_start = time.perf_counter()
        step_loss = 0.0
        step_images = 0
        for _ in range(accum):
            images, labels = next(batches)
            step_images += len(labels)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with precision.autocast():
                text = prompts.features(model) if reencode_text else cached_text
                loss = F.cross_entropy(logits(image_features(model, images), text).float(), labels) / accum
            scaler.scale(loss).backward()
            step_loss += loss.item()
        dist.average_gradients(params)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        losses.append(step_loss)
        if on_step:
            record = StepRecord(step=step + 1, total_steps=total_steps, loss=step_loss, lr=lr,
                                seconds=time.perf_counter() - step_start, images=step_images * dist.world,
                                grad_scale=scaler.get_scale() if scaler.is_enabled() else None)
            for callback in on_step:
                callback(record)
        if checkpoint is not None and dist.is_main and checkpoint.due(step + 1, total_steps):
            checkpoint.save(step + 1, model, optimizer, scheduler, scaler, losses, time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TrainResult(steps=total_steps, seconds=time.perf_counter() - start, losses=losses)
