"""Your own images, one folder per class.

Two layouts under --root_path:
- `<class>/<image>`: split per class into 50% train, 20% val, 30% test with a fixed seed, so the
  test set is the same for every run seed;
- `train/<class>/<image>`, `test/<class>/<image>` and optionally `val/<class>/<image>` (without
  val/, the few-shot val set is drawn from train).
Class names are the folder names, sorted; labels follow that order.
"""
from __future__ import annotations

import random
from pathlib import Path

from run_utils import UserError

from .base import Item, SplitDataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
FRACTIONS = (0.5, 0.2)  # train, val; the rest is test


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _items(folder: Path, label_of: dict[str, int], split: str) -> list[Item]:
    items = []
    for class_folder in _class_folders(folder):
        if class_folder.name not in label_of:
            raise UserError(f"--dataset folder: class {class_folder.name!r} in {folder} has no folder "
                            f"in {folder.parent / 'train'}; every {split} class must also be a train class")
        items += [Item(str(p), label_of[class_folder.name], class_folder.name) for p in _images(class_folder)]
    return items


def load(root: Path) -> SplitDataset:
    if not root.is_dir():
        raise UserError(f"--dataset folder: --root_path {root} is not a folder; point it at a folder "
                        "with one sub-folder of images per class (or train/ and test/ sub-folders)")
    if (root / "train").is_dir():
        return _explicit_split(root)
    return _auto_split(root)


def _explicit_split(root: Path) -> SplitDataset:
    if not (root / "test").is_dir():
        raise UserError(f"--dataset folder: {root / 'train'} exists but {root / 'test'} does not; "
                        "add test/<class>/ folders or use the one-folder-per-class layout")
    classnames = [p.name for p in _class_folders(root / "train")]
    label_of = {name: i for i, name in enumerate(classnames)}
    train = _items(root / "train", label_of, "train")
    test = _items(root / "test", label_of, "test")
    val = _items(root / "val", label_of, "val") if (root / "val").is_dir() else train
    _require_images(root, train, classnames)
    return SplitDataset(train=train, val=val, test=test, classnames=classnames)


def _auto_split(root: Path) -> SplitDataset:
    classnames = [p.name for p in _class_folders(root)]
    train, val, test = [], [], []
    rng = random.Random(SPLIT_SEED)
    for label, name in enumerate(classnames):
        paths = _images(root / name)
        rng.shuffle(paths)
        n_train = max(1, round(FRACTIONS[0] * len(paths)))
        n_val = round(FRACTIONS[1] * len(paths))
        items = [Item(str(p), label, name) for p in paths]
        train += items[:n_train]
        val += items[n_train:n_train + n_val]
        test += items[n_train + n_val:]
    _require_images(root, train, classnames)
    if not val:
        val = train
    return SplitDataset(train=train, val=val, test=test, classnames=classnames)


def _require_images(root: Path, train: list[Item], classnames: list[str]) -> None:
    if len(classnames) < 2:
        raise UserError(f"--dataset folder: {root} has {len(classnames)} class folder(s); "
                        "few-shot classification needs at least two")
    empty = set(classnames) - {item.classname for item in train}
    if empty:
        raise UserError(f"--dataset folder: no images for class(es) {sorted(empty)} under {root}")
