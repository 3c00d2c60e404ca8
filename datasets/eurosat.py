"""EuroSAT (RGB): 10 land-use classes of Sentinel-2 tiles, CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("eurosat", "EuroSAT")  # CoOp and CLIP-LoRA both say eurosat; the zip's own name too
IMAGE_DIR = "2750"
SPLIT_FILE = "split_zhou_EuroSAT.json"
TEMPLATE = "a centered satellite photo of {}."
SIZES = SplitSizes(classes=10, train=13_500, val=5_400, test=8_100)
# CoOp's readable names for the folder names; its split file already carries them, so this only
# matters for a split written from the raw folders.
RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "SeaLake": "Sea or Lake",
}


def load(root: Path) -> SplitDataset:
    return read_coop_split("eurosat", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE,
                           lambda name: RENAMES.get(name, name))
