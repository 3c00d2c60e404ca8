"""FGVC-Aircraft: 100 aircraft variants ("737-400"), the dataset's own train/val/test lists.

Read from the files of the official archive's data/ folder: variants.txt (one class per line,
its order gives the labels) and images_variant_{train,val,test}.txt (lines "<image id> <variant>",
the image being images/<image id>.jpg).
"""
from __future__ import annotations

import os
from pathlib import Path

from qlora_clip.errors import UserError

from qlora_clip.data.items import Item, SplitDataset, SplitSizes
from .splits import PARTS, checked_split, find_folder, read_text, require_file

NAME = "fgvc"
# CoOp and CLIP-LoRA both say fgvc_aircraft; the archive's own data/ folder works unrenamed.
FOLDERS = ("fgvc_aircraft", "fgvc-aircraft-2013b/data")
IMAGE_DIR = "images"
CLASSES_FILE = "variants.txt"
SPLIT_FILES = {part: f"images_variant_{part}.txt" for part in PARTS}
TEMPLATE = "a photo of a {}, a type of aircraft."
SIZES = SplitSizes(classes=100, train=3_334, val=3_333, test=3_333)


def read_variants(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path, "class list").splitlines() if line.strip()]


def read_list(path: Path, image_dir: Path, label_of: dict[str, int]) -> list[Item]:
    items = []
    for number, line in enumerate(read_text(path, "image list").splitlines(), start=1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        if variant not in label_of:
            raise UserError(f"--dataset {NAME}: {path}:{number}: variant {variant!r} is not in "
                            f"{CLASSES_FILE}; the files come from different downloads")
        items.append(Item(os.path.join(image_dir, image_id + ".jpg"), label_of[variant], variant))
    return items


def load(root: Path) -> SplitDataset:
    folder = find_folder(NAME, root, FOLDERS, IMAGE_DIR)
    classnames = read_variants(require_file(NAME, folder / CLASSES_FILE, "class list"))
    label_of = {name: label for label, name in enumerate(classnames)}
    parts = {part: read_list(require_file(NAME, folder / file, "split file"), folder / IMAGE_DIR, label_of)
             for part, file in SPLIT_FILES.items()}
    split = checked_split(NAME, parts, folder / SPLIT_FILES["train"], TEMPLATE)
    if split.classnames != classnames:
        raise UserError(f"--dataset {NAME}: {folder / SPLIT_FILES['train']} does not cover every variant "
                        f"of {folder / CLASSES_FILE}; the files come from different downloads")
    return split
