"""Food-101: 101 dishes, CoOp's fixed split (val carved out of the official train list)."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("food-101", "Food101")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_Food101.json"
TEMPLATE = "a photo of {}, a type of food."
SIZES = SplitSizes(classes=101, train=50_500, val=20_200, test=30_300)


def load(root: Path) -> SplitDataset:
    return read_coop_split("food101", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
