"""From few-shot items to tensors: the CLIP transforms and the train and test DataLoaders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision import transforms as T

from batching import SeededAugmentation, TrainBatchSampler
from datasets import Item


@dataclass(frozen=True)
class ImageSettings:
    """What the vision tower expects, from the checkpoint's image processor."""
    image_size: int   # side of the square crop
    resize_size: int  # shorter side before the centre crop at test time
    mean: tuple[float, ...]
    std: tuple[float, ...]


def train_transform(image: ImageSettings) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(image.image_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(image.mean, image.std),
    ])


def eval_transform(image: ImageSettings) -> T.Compose:
    return T.Compose([
        T.Resize(image.resize_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image.image_size),
        T.ToTensor(),
        T.Normalize(image.mean, image.std),
    ])


class ImageDataset(Dataset):
    def __init__(self, items: list[Item], load_image: Callable[[Any], Image.Image], transform: Callable):
        self.items = items
        self.load_image = load_image
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        return self.transform(self.load_image(item.source)), item.label


def _unchanged(image):
    return image  # the random transform is applied by SeededAugmentation


def _loader_options(num_workers: int, device: torch.device) -> dict:
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda", "persistent_workers": num_workers > 0}


class ShardSampler(Sampler[int]):
    """Rank r of `world` reads items r, r + world, ...: each test image is encoded by one process."""

    def __init__(self, n_items: int, rank: int = 0, world: int = 1):
        self.indices = range(rank, n_items, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(items: list[Item], load_image: Callable, image: ImageSettings, batch_size: int,
                num_workers: int, device: torch.device, rank: int = 0, world: int = 1) -> DataLoader:
    """This rank's share of the test images, resized and centre-cropped, in batches."""
    dataset = ImageDataset(items, load_image, eval_transform(image))
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(items), rank, world),
                      **_loader_options(num_workers, device))


def collate_or_none(samples: list):
    """A batch, or None for an empty micro-batch (a short batch shared by more ranks than images)."""
    return default_collate(samples) if samples else None


def train_loader(items: list[Item], load_image: Callable, image: ImageSettings, sampler: TrainBatchSampler,
                 num_workers: int, device: torch.device) -> DataLoader:
    """Endless micro-batches in the order `sampler` gives (see batching.py)."""
    dataset = SeededAugmentation(ImageDataset(items, load_image, _unchanged), train_transform(image))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_or_none,
                      **_loader_options(num_workers, device))
