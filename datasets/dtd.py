"""DTD, the Describable Textures Dataset: 47 texture words, CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("dtd", "DTD")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_DescribableTextures.json"
TEMPLATE = "{} texture."
SIZES = SplitSizes(classes=47, train=2_820, val=1_128, test=1_692)


def load(root: Path) -> SplitDataset:
    return read_coop_split("dtd", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
