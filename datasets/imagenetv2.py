"""ImageNet-V2 (MatchedFrequency): 10,000 test images of ImageNet's 1,000 classes, collected anew
the way the original test set was.

Test-only; CoOp's layout (DATASETS.md).
"""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .imagenet_variants import load_numbered_folders

FOLDER = "imagenetv2"
SIZES = SplitSizes(classes=1_000, train=0, val=0, test=10_000)  # test-only
IMAGE_DIR = "imagenetv2-matched-frequency-format-val"


def load(root: Path) -> SplitDataset:
    return load_numbered_folders("imagenetv2", root, FOLDER, IMAGE_DIR)
