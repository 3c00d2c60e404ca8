"""Oxford Flowers 102: 102 flower species, CoOp's fixed split (names from cat_to_name.json)."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("oxford_flowers", "Flower102")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "jpg"
SPLIT_FILE = "split_zhou_OxfordFlowers.json"
TEMPLATE = "a photo of a {}, a type of flower."
SIZES = SplitSizes(classes=102, train=4_093, val=1_633, test=2_463)


def load(root: Path) -> SplitDataset:
    # The split already holds cat_to_name.json's names, so that file is not read.
    return read_coop_split("oxford_flowers", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
