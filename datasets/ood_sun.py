"""SUN, MCM's OOD subset: 10,000 scene images of 50 nature-related concepts absent from ImageNet-1k.

Test-only and unlabelled; the layouts it is read in are in ood_benchmark.py and DATASETS.md.
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .ood_benchmark import MCM_FOLDER, load_ood_set

NAME = "ood_sun"
FOLDERS = (f"{MCM_FOLDER}/SUN", "SUN")
SIZES = SplitSizes(classes=1, train=0, val=0, test=10_000)  # one pseudo-class: the images carry no labels


def load(root: Path) -> SplitDataset:
    return load_ood_set(NAME, root, FOLDERS, "SUN")
