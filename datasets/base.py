"""What every dataset module returns, and the torch Dataset that turns items into tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Item:
    """One labelled image. `source` is whatever the dataset's image loader takes (usually a path)."""
    source: Any
    label: int
    classname: str


def open_rgb(path: Any) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


@dataclass
class SplitDataset:
    """A dataset's fixed train/val/test split, as its module reads it from disk."""
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    template: str = "a photo of a {}."
    load_image: Callable[[Any], Image.Image] = open_rgb


@dataclass
class FewShotDataset:
    """The few-shot view a run trains on: sampled train/val, the full test set."""
    name: str
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    template: str
    load_image: Callable[[Any], Image.Image] = field(repr=False, default=open_rgb)

    def prompts(self) -> list[str]:
        """One prompt per class, in label order (underscores in class names become spaces)."""
        return [self.template.format(name.replace("_", " ")) for name in self.classnames]


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
