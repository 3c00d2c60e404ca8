"""The train images as a baseline sees them: centre-cropped once, or as augmented views.

A view set is `count` augmented copies of every train image, drawn with a method's crop law
(`scale` of RandomResizedCrop, then a horizontal flip, as augment.py draws it for training). View v
of image i is drawn from its own generator, seeded from (run seed, stream, v, i): the same views
whatever the batch size, the workers or the order of encoding, so a cached file and a fresh encoding
agree exactly, and two methods that declare the same stream share one file. Streams keep apart the
views a paper draws independently (Tip-Adapter's cache views and its fine-tuning views).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset

from qlora_clip.inputs.augment import random_resized_crop_flip
from qlora_clip.inputs.train_images import DecodedImages, DecodeOnRead


@dataclass(frozen=True)
class ViewSet:
    """`count` augmented views of each train image: crop scale, and the seed stream they are drawn from."""
    stream: str                  # e.g. "tip-cache", "tip-finetune", "dassl-epochs"
    scale: tuple[float, float]   # RandomResizedCrop's area range
    count: int

    def describe(self) -> dict:
        return {"stream": self.stream, "scale": list(self.scale), "count": self.count}


def view_seed(seed: int, stream: str, view: int, index: int) -> int:
    """The generator seed of view `view` of train image `index` (63 bits, from a hash: no two collide in practice)."""
    digest = hashlib.sha256(f"{seed}:{stream}:{view}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class AugmentedViews(Dataset):
    """Item k = view k // n of image k % n, as uint8 CHW pixels: one view's images are contiguous."""

    def __init__(self, images: DecodedImages | DecodeOnRead, views: ViewSet, seed: int, size: int):
        self.images, self.views, self.seed, self.size = images, views, seed, size

    def __len__(self) -> int:
        return self.views.count * len(self.images)

    def __getitem__(self, key: int) -> torch.Tensor:
        view, index = divmod(key, len(self.images))
        generator = torch.Generator().manual_seed(view_seed(self.seed, self.views.stream, view, index))
        return random_resized_crop_flip(self.images[index], self.size, generator, self.views.scale)


def labels_tensor(labels: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(labels), dtype=torch.int64, device=device)
