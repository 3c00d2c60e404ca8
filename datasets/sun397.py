"""SUN397: 397 scene categories, CoOp's fixed split (names like "indoor church")."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("sun397", "SUN397")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "SUN397"
SPLIT_FILE = "split_zhou_SUN397.json"
TEMPLATE = "a photo of a {}."
SIZES = SplitSizes(classes=397, train=15_880, val=3_970, test=19_850)


def load(root: Path) -> SplitDataset:
    return read_coop_split("sun397", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
