"""Stanford Cars: 196 car models ("2012 Tesla Model S Sedan"), CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("stanford_cars", "StanfordCars")  # CoOp's name, CLIP-LoRA's name
# The split's paths start with cars_train/ or cars_test/: they are relative to the dataset folder.
IMAGE_DIR = ""
SPLIT_FILE = "split_zhou_StanfordCars.json"
TEMPLATE = "a photo of a {}."
SIZES = SplitSizes(classes=196, train=6_509, val=1_635, test=8_041)


def load(root: Path) -> SplitDataset:
    return read_coop_split("stanford_cars", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
