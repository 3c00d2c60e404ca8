"""ImageNet-R: 30,000 renditions (art, cartoons, sculptures, ...) of 200 ImageNet classes.

Test-only; CoOp's layout (DATASETS.md).
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .imagenet_variants import load_wnid_folders

FOLDER = "imagenet-rendition"
SIZES = SplitSizes(classes=200, train=0, val=0, test=30_000)  # test-only
IMAGE_DIR = "imagenet-r"


def load(root: Path) -> SplitDataset:
    return load_wnid_folders("imagenet_r", root, FOLDER, IMAGE_DIR)
