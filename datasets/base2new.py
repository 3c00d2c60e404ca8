"""Base-to-novel generalization (CoCoOp's protocol): which classes a run trains on, which it never sees.

The classes are split as CoCoOp's code splits them: the distinct labels, sorted; the first
ceil(n/2) are the base classes, the rest the new ones; each half is relabelled 0..k-1 in label
order, so each half has a classifier of its own. The few-shot set is drawn over all classes first
(the same draw as the few-shot protocol for the same seed) and only then restricted to the base
classes, which is the order the published numbers were computed in. Each half must have two classes
at least (a one-class classifier is always right), so a dataset of fewer than four classes is
refused when the data is read, before any checkpoint is looked up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from qlora_clip.errors import UserError

from qlora_clip.data.items import EvalImages, FewShotDataset, Item


@dataclass(frozen=True)
class ClassSplit:
    """Original labels of the base and the new classes, each in ascending order."""
    base: tuple[int, ...]
    new: tuple[int, ...]


def split_classes(labels: Iterable[int]) -> ClassSplit:
    """Sorted distinct labels; base = the first ceil(n/2), new = the rest."""
    ordered = sorted(set(labels))
    m = math.ceil(len(ordered) / 2)
    return ClassSplit(base=tuple(ordered[:m]), new=tuple(ordered[m:]))


def relabel(items: Sequence[Item], keep: Sequence[int]) -> list[Item]:
    """The items whose label is in `keep`, in their order, relabelled by the label's position in `keep`."""
    new_label = {label: position for position, label in enumerate(keep)}
    return [Item(item.source, new_label[item.label], item.classname) for item in items if item.label in new_label]


# Classes each half needs: a classifier of one class is right on every image (100 %, a loss of 0).
MIN_CLASSES_PER_HALF = 2


def base_to_new(data: FewShotDataset) -> FewShotDataset:
    """The base classes' view of a drawn few-shot set, with the new classes' test set beside it; UserError when a
    half would have fewer than MIN_CLASSES_PER_HALF classes (4 classes at least in all)."""
    split = split_classes(item.label for item in data.train)
    if min(len(split.base), len(split.new)) < MIN_CLASSES_PER_HALF:
        n = len(split.base) + len(split.new)
        raise UserError(f"--protocol base2new: --dataset {data.name} has {n} class(es), which split into "
                        f"{len(split.base)} base and {len(split.new)} new; each half needs at least "
                        f"{MIN_CLASSES_PER_HALF} classes to be classified (one class is always right, 100 %), so "
                        f"base-to-novel needs at least {2 * MIN_CLASSES_PER_HALF}: use --protocol fewshot")
    new = EvalImages(name=f"{data.name} (new classes)", test=relabel(data.test, split.new),
                     classnames=[data.classnames[label] for label in split.new],
                     template=data.template, load_image=data.load_image)
    return FewShotDataset(name=data.name, train=relabel(data.train, split.base), val=relabel(data.val, split.base),
                          test=relabel(data.test, split.base),
                          classnames=[data.classnames[label] for label in split.base],
                          template=data.template, load_image=data.load_image, shots=data.shots, seed=data.seed,
                          protocol="base2new", new=new, split_file=data.split_file)
