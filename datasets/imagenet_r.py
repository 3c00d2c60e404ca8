"""ImageNet-R: 30,000 renditions (art, cartoons, sculptures, ...) of 200 ImageNet classes.

Test-only; CoOp's layout (DATASETS.md).
"""
from __future__ import annotations

from pathlib import Path

from .base import SplitDataset
from .imagenet_variants import load_wnid_folders

FOLDER = "imagenet-rendition"
IMAGE_DIR = "imagenet-r"


def load(root: Path) -> SplitDataset:
    return load_wnid_folders("imagenet_r", root, FOLDER, IMAGE_DIR)
