"""Dataset factory: `build_dataset(name, root, shots, seed)`.

Each dataset is a short module with `load(root) -> SplitDataset`; reading its fixed split is the
module's job, few-shot sampling happens here, once, for all of them.
"""
from __future__ import annotations

import json
from pathlib import Path

from run_utils import UserError

from . import fashion_mnist, folder
from .base import FewShotDataset, ImageDataset, Item, SplitDataset
from .sampling import sample_train_val

DATASETS = {
    "fashion_mnist": fashion_mnist,
    "folder": folder,
}

__all__ = ["DATASETS", "FewShotDataset", "ImageDataset", "Item", "SplitDataset", "build_dataset", "write_subset"]


CLIP_LORA_TEMPLATE = "a photo of a {}."


def build_dataset(name: str, root: str | Path, shots: int, seed: int,
                  template: str = "clip-lora") -> FewShotDataset:
    """The few-shot view of a dataset; `template` is 'clip-lora' (one prompt for all) or 'dataset'."""
    if name not in DATASETS:
        raise UserError(f"--dataset {name}: unknown dataset; choose one of {', '.join(sorted(DATASETS))}")
    split = DATASETS[name].load(Path(root))
    train, val = sample_train_val(split.train, split.val, shots, seed)
    return FewShotDataset(name=name, train=train, val=val, test=split.test,
                          classnames=split.classnames,
                          template=CLIP_LORA_TEMPLATE if template == "clip-lora" else split.template,
                          load_image=split.load_image)


def write_subset(data: FewShotDataset, path: str | Path) -> None:
    """Record which images a run trained and validated on, so the draw can be audited."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": data.name,
        "classnames": data.classnames,
        "train": [[str(item.source), item.label] for item in data.train],
        "val": [[str(item.source), item.label] for item in data.val],
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
