"""Oxford-IIIT Pets: 37 cat and dog breeds, CoOp's fixed split (val carved out of trainval)."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("oxford_pets", "OxfordPets")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_OxfordPets.json"
TEMPLATE = "a photo of a {}, a type of pet."
SIZES = SplitSizes(classes=37, train=2_944, val=736, test=3_669)


def load(root: Path) -> SplitDataset:
    # Breeds are lower case in CoOp (the file names capitalise cat breeds only).
    return read_coop_split("oxford_pets", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE, str.lower)
