"""Caltech101: 100 object classes (the background class left out), CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("caltech-101", "Caltech101")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "101_ObjectCategories"
SPLIT_FILE = "split_zhou_Caltech101.json"
TEMPLATE = "a photo of a {}."
SIZES = SplitSizes(classes=100, train=4_128, val=1_649, test=2_465)
# CoOp's renames of folder names; its split file already carries the new names, so this only
# matters for a split written from the raw folders.
RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def load(root: Path) -> SplitDataset:
    return read_coop_split("caltech101", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE,
                           lambda name: RENAMES.get(name, name))
