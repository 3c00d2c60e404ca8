"""What every dataset module returns: labelled items, the fixed split, the few-shot view (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from qlora_clip.data.images import open_rgb
from qlora_clip.paper import CLIP_LORA_TEMPLATE


@dataclass(frozen=True)
class Item:
    """One labelled image. `source` is whatever the dataset's image loader takes (usually a path)."""
    source: Any
    label: int
    classname: str


@dataclass(frozen=True)
class SplitSizes:
    """A dataset's full split as published (the table in DATASETS.md): classes and images per part.

    check_data.py compares a download with it; val is 0 where the dataset has no val part.
    """
    classes: int
    train: int
    val: int
    test: int


@dataclass
class SplitDataset:
    """A dataset's fixed train/val/test split, as its module reads it from disk.

    `val_from_train`: the dataset has no val split (ImageNet); the few-shot val images are drawn
    from train in the same draw as the train images (docs/protocol.md, "Few-shot sampling"), and `val` is empty.
    """
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    template: str = CLIP_LORA_TEMPLATE
    load_image: Callable[[Any], Image.Image] = open_rgb
    val_from_train: bool = False


def class_prompts(template: str, classnames: list[str]) -> list[str]:
    """One prompt per class, in label order (underscores in class names become spaces)."""
    return [template.format(name.replace("_", " ")) for name in classnames]


class PromptedClasses:
    """What has class names and a template: one prompt per class, in label order."""
    classnames: list[str]
    template: str

    def prompts(self) -> list[str]:
        return class_prompts(self.template, self.classnames)


@dataclass
class EvalImages(PromptedClasses):
    """Test images and the class names their labels index: what one classifier is evaluated on."""
    name: str
    test: list[Item]
    classnames: list[str]
    template: str
    load_image: Callable[[Any], Image.Image] = field(repr=False, default=open_rgb)


@dataclass
class FewShotDataset(PromptedClasses):
    """The few-shot view a run trains on: sampled train/val, the full test set.

    Under `protocol` 'base2new' train, val, test and classnames hold the base classes only
    (relabelled 0..k-1), and `new` the new classes' test images and names (datasets/base2new.py).
    `split_file` is set when train and val are a published split's (--split_file), not our draw.
    """
    name: str
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    template: str
    load_image: Callable[[Any], Image.Image] = field(repr=False, default=open_rgb)
    shots: int | None = None
    seed: int | None = None
    protocol: str = "fewshot"
    new: EvalImages | None = None
    # Where train and val came from when a published split gave them (--split_file) instead of our draw: its
    # path, format, the files read, the digest of its lists and where val came from (datasets/split_files.py).
    split_file: dict | None = None

    @property
    def shots_drawn(self) -> int:
        """The fewest distinct train images of any class: `shots`, unless a class had fewer images than that and
        the draw repeated some (the results line's `shots_drawn`)."""
        distinct: dict[int, set] = {}
        for item in self.train:
            distinct.setdefault(item.label, set()).add(item.source)
        return min((len(sources) for sources in distinct.values()), default=0)
