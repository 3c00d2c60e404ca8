"""What every dataset module returns, and the torch Dataset that turns items into tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image
from torch.utils.data import Dataset

DEFAULT_TEMPLATE = "a photo of a {}."


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
    """A dataset's fixed train/val/test split, as its module reads it from disk.

    `val_from_train`: the dataset has no val split (ImageNet); the few-shot val images are drawn
    from train in the same draw as the train images (REFERENCE.md section 3), and `val` is empty.
    """
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    template: str = DEFAULT_TEMPLATE
    load_image: Callable[[Any], Image.Image] = open_rgb
    val_from_train: bool = False


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
    shots: int | None = None
    seed: int | None = None

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
