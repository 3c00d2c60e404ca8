"""ImageNet-Sketch: 50,889 black-and-white sketches of ImageNet's 1,000 classes.

Test-only; CoOp's layout (DATASETS.md).
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .imagenet_variants import load_wnid_folders

FOLDER = "imagenet-sketch"
SIZES = SplitSizes(classes=1_000, train=0, val=0, test=50_889)  # test-only
IMAGE_DIR = "images"


def load(root: Path) -> SplitDataset:
    return load_wnid_folders("imagenet_sketch", root, FOLDER, IMAGE_DIR)
