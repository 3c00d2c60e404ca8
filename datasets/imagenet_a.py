"""ImageNet-A: 7,500 natural images that ResNet-50 misclassifies, of 200 ImageNet classes.

Test-only; CoOp's layout (DATASETS.md).
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .imagenet_variants import load_wnid_folders

FOLDER = "imagenet-adversarial"
SIZES = SplitSizes(classes=200, train=0, val=0, test=7_500)  # test-only
IMAGE_DIR = "imagenet-a"


def load(root: Path) -> SplitDataset:
    return load_wnid_folders("imagenet_a", root, FOLDER, IMAGE_DIR)
