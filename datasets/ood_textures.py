"""Textures (DTD), an OOD set of MCM's benchmark: all 5,640 images of its 47 texture categories.

Test-only and unlabelled; the layouts it is read in are in ood_benchmark.py and DATASETS.md.
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .ood_benchmark import MCM_FOLDER, load_ood_set

NAME = "ood_textures"
FOLDERS = (f"{MCM_FOLDER}/dtd/images", f"{MCM_FOLDER}/Textures", "Textures", "dtd/images", "DTD/images")
SIZES = SplitSizes(classes=1, train=0, val=0, test=5_640)  # one pseudo-class: the images carry no labels


def load(root: Path) -> SplitDataset:
    return load_ood_set(NAME, root, FOLDERS, "Textures")
