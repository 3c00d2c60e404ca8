"""Dataset factory: `build_dataset(name, root, shots, seed, template)`.

Each dataset is a short module with `load(root) -> SplitDataset` declaring its folders, split
files, class-name fixes and prompt template; the shared split reading lives in `splits.py`, and
few-shot sampling happens here, once, for all of them (docs/protocol.md, "Few-shot sampling").
Modules are imported when a dataset is built, so listing the names (the CLI's --dataset choices)
costs nothing.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from types import ModuleType

from errors import UserError
from protocol import CLIP_LORA_TEMPLATE

from .base import FewShotDataset, Item, SplitDataset
from .sampling import sample_train_then_val, sample_train_val

# --dataset name -> module of this package. The 11 datasets of the CLIP-LoRA table, by the names
# its scripts use, then our own two.
DATASETS = {
    "imagenet": "imagenet",
    "caltech101": "caltech101",
    "oxford_pets": "oxford_pets",
    "stanford_cars": "stanford_cars",
    "oxford_flowers": "oxford_flowers",
    "food101": "food101",
    "fgvc": "fgvc",
    "sun397": "sun397",
    "dtd": "dtd",
    "eurosat": "eurosat",
    "ucf101": "ucf101",
    "fashion_mnist": "fashion_mnist",
    "folder": "folder",
}
DATASET_NAMES = tuple(DATASETS)
TEMPLATES = ("clip-lora", "dataset")

log = logging.getLogger(__name__)

__all__ = ["DATASETS", "DATASET_NAMES", "TEMPLATES", "FewShotDataset", "Item", "SplitDataset",
           "build_dataset", "dataset_module", "write_subset"]


def dataset_module(name: str) -> ModuleType:
    """The module that reads dataset `name` from disk."""
    if name not in DATASETS:
        raise UserError(f"--dataset {name}: unknown dataset; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"{__name__}.{DATASETS[name]}")


def build_dataset(name: str, root: str | Path, shots: int, seed: int,
                  template: str = "clip-lora") -> FewShotDataset:
    """The few-shot view of a dataset, drawn as CLIP-LoRA draws it for this seed and shot count.

    `template` is 'clip-lora' ('a photo of a {}.' for every dataset, as CLIP-LoRA trains) or
    'dataset' (CoOp's per-dataset prompt).
    """
    if template not in TEMPLATES:
        raise UserError(f"--template {template}: choose one of {', '.join(TEMPLATES)}")
    split = dataset_module(name).load(Path(root))
    # The full split's sizes, to compare with the counts in DATASETS.md.
    log.info("%s: %d classes; split of %d train / %d val / %d test images", name, len(split.classnames),
             len(split.train), len(split.val), len(split.test))
    if split.val_from_train:
        train, val = sample_train_then_val(split.train, shots, seed)
    else:
        train, val = sample_train_val(split.train, split.val, shots, seed)
    return FewShotDataset(name=name, train=train, val=val, test=split.test,
                          classnames=split.classnames,
                          template=CLIP_LORA_TEMPLATE if template == "clip-lora" else split.template,
                          load_image=split.load_image, shots=shots, seed=seed)


def write_subset(data: FewShotDataset, path: str | Path) -> None:
    """Record which images a run trained and validated on, so the draw can be audited.

    Sources are written as the loader saw them (paths under --root_path; image indices for
    Fashion-MNIST), train and val in the order they were drawn.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": data.name,
        "shots": data.shots,
        "seed": data.seed,
        "template": data.template,
        "classnames": data.classnames,
        "test_images": len(data.test),
        "train": [[str(item.source), item.label] for item in data.train],
        "val": [[str(item.source), item.label] for item in data.val],
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
