"""DTD, the Describable Textures Dataset: 47 texture words, CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from .base import SplitDataset
from .splits import read_coop_split

FOLDERS = ("dtd", "DTD")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_DescribableTextures.json"
TEMPLATE = "{} texture."


def load(root: Path) -> SplitDataset:
    return read_coop_split("dtd", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
