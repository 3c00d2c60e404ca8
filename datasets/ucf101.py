"""UCF101: 101 human actions, one middle frame per video, CoOp's fixed split."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.data.items import SplitDataset, SplitSizes
from .splits import read_coop_split

FOLDERS = ("ucf101", "UCF101")  # CoOp's name, CLIP-LoRA's name
IMAGE_DIR = "UCF-101-midframes"
SPLIT_FILE = "split_zhou_UCF101.json"
TEMPLATE = "a photo of a person doing {}."
SIZES = SplitSizes(classes=101, train=7_639, val=1_898, test=3_783)


def load(root: Path) -> SplitDataset:
    # Class names such as "Apply_Eye_Makeup" become "Apply Eye Makeup" at prompt time.
    return read_coop_split("ucf101", root, FOLDERS, IMAGE_DIR, SPLIT_FILE, TEMPLATE)
