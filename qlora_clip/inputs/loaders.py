"""From few-shot items to model inputs: the train stream and the evaluation batches.

Batches leave the loaders as uint8 pixels (4x less to copy than float) and are converted and
normalised on the device (`to_model_input`). Training reads the images decoded once
(image_store.py) and augments them on uint8 tensors (augment.py); evaluation reads the test
images preprocessed once (eval_images.py).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms as T

from qlora_clip.backbones.families import ImageSettings
from qlora_clip.errors import UserError, WorkerError, first_worker_error, raise_worker_error
from qlora_clip.inputs.augment import random_resized_crop_flip
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.inputs.train_images import DecodedImages, DecodeOnRead

# Batches a worker prepares ahead of the step that needs them.
PREFETCH_BATCHES = 4
# DataLoader workers per process on CUDA when --num_workers is not given (CLIP-LoRA uses 8).
MAX_AUTO_WORKERS = 8


def eval_transform(image: ImageSettings) -> T.Compose:
    """PIL image -> CHW uint8, as the checkpoint's image processor (its PIL backend) resizes: CLIP's shorter side
    resized (bicubic) and a centre crop, or SigLIP's whole image resized to the square (bicubic), no crop."""
    if not image.center_crop:
        size = (image.image_size, image.image_size)
        return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.PILToTensor()])
    return T.Compose([
        T.Resize(image.resize_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image.image_size),
        T.PILToTensor(),
    ])


def to_model_input(pixels: torch.Tensor, device: torch.device, image: ImageSettings) -> torch.Tensor:
    """uint8 NCHW pixels -> the float, normalised input of the vision tower, on `device`."""
    scale, shift = _normalisation(image, device)
    return torch.addcmul(shift, pixels.to(device, non_blocking=True).float(), scale)


@functools.lru_cache(maxsize=8)
def _normalisation(image: ImageSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / 255 - mean) / std as one multiply-add: x * scale + shift, per channel."""
    mean = torch.tensor(image.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1 / (255 * std)).to(device), (-mean / std).to(device)


def default_num_workers(device: torch.device) -> int:
    """--num_workers when not given: on CUDA, the CPUs this process may use (shared with the other
    local processes of a multi-GPU run), at most 8; on the CPU none, the step needs the cores."""
    if device.type != "cuda":
        return 0
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_AUTO_WORKERS, len(os.sched_getaffinity(0)) // local_processes - 1))


def _loader_options(num_workers: int, device: torch.device) -> dict:
    options = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES)
    return options


class AugmentedImages(Dataset):
    """Train image `index`, augmented with the generator seeded by `seed` (keys come from the sampler)."""

    def __init__(self, images: DecodedImages | DecodeOnRead, labels: Sequence[int], size: int):
        self.images, self.labels, self.size = images, list(labels), size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | WorkerError:
        index, seed = key
        generator = torch.Generator().manual_seed(seed)
        try:
            image = self.images[index]  # decoded here above --decode_budget_gb
        except UserError as err:  # an unreadable image: its one-line message, not a worker's traceback
            return WorkerError(str(err))
        return random_resized_crop_flip(image, self.size, generator), self.labels[index]


def collate_or_none(samples: list):
    """A batch, None for an empty micro-batch (a short batch shared by more ranks than images), or the
    WorkerError of an image that could not be read."""
    if not samples:
        return None
    return first_worker_error(samples) or default_collate(samples)


class TrainStream:
    """Endless training micro-batches, on the device and normalised, in the order of `sampler`.

    `input_wait_seconds` adds up the time the training loop spent waiting for its next batch.
    """

    def __init__(self, images: DecodedImages | DecodeOnRead, labels: Sequence[int], image: ImageSettings,
                 sampler: TrainBatchSampler, num_workers: int, device: torch.device):
        self.sampler = sampler
        self.image = image
        self.device = device
        self.dataset = AugmentedImages(images, labels, image.image_size)
        # The augmentation draws from per-image generators; the loader gets its own generator so that
        # starting it leaves the global one (dropout) untouched.
        self.loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate_or_none,
                                 generator=torch.Generator(), **_loader_options(num_workers, device))
        self.input_wait_seconds = 0.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | None]:
        batches = iter(self.loader)
        while True:
            start = time.perf_counter()
            batch = next(batches)
            self.input_wait_seconds += time.perf_counter() - start
            raise_worker_error(batch)
            if batch is None:
                yield None
                continue
            pixels, labels = batch
            yield to_model_input(pixels, self.device, self.image), labels.to(self.device, non_blocking=True)


class EvalBatches:
    """Preprocessed test images (uint8, N x 3 x S x S) and labels, in batches on the device."""

    def __init__(self, pixels: torch.Tensor, labels: Sequence[int], image: ImageSettings, batch_size: int,
                 device: torch.device):
        self.pixels, self.labels = pixels, torch.tensor(labels, dtype=torch.int64)
        self.image, self.batch_size, self.device = image, batch_size, device

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    @property
    def images(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pin = self.device.type == "cuda"
        for start in range(0, len(self.labels), self.batch_size):
            pixels = self.pixels[start:start + self.batch_size]
            pixels = pixels.pin_memory() if pin else pixels
            yield (to_model_input(pixels, self.device, self.image),
                   self.labels[start:start + self.batch_size].to(self.device, non_blocking=True))

