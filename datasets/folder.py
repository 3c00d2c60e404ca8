"""Your own images (`--dataset folder --root_path <your folder>`), in one of three layouts:

- a split json in CoOp's format (`split.json` or `split_zhou_<name>.json`, one of them) with
  paths relative to the folder, which must stay in it: used as is (an empty val part: val drawn
  from train, as below);
- `train/<class>/<image>`, `test/<class>/<image>` and optionally `val/<class>/<image>`; without
  val/, the few-shot val images are drawn from train with the train shots, as for ImageNet;
- `<class>/<image>`: split per class into 50% train, 20% val, 30% test with a fixed seed, so the
  test set is the same for every run seed.
Class names are the folder names, sorted, and labels follow that order. An optional
`classnames.txt` maps folder names to the names the prompts use, one "<folder> <name>" per line
(a tab instead of the first space when folder names hold spaces).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from qlora_clip.errors import UserError

from qlora_clip.data.items import Item, SplitDataset
from .splits import NotFound, checked_split, read_split_json, read_text

NAME = "folder"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
FRACTIONS = (0.5, 0.2)  # train, val; the rest is test
CLASSNAMES_FILE = "classnames.txt"
SPLIT_PATTERNS = ("split.json", "split_zhou_*.json")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_classnames(path: Path) -> dict[str, str]:
    """Folder name -> prompt name, from "<folder> <name>" or "<folder>\\t<name>" lines."""
    names = {}
    for number, line in enumerate(read_text(path, "class-name file").splitlines(), start=1):
        if not line.strip():
            continue
        separator = "\t" if "\t" in line else " "
        folder, _, name = line.strip().partition(separator)
        if not name.strip():
            raise UserError(f"--dataset {NAME}: {path}:{number}: expected \"<folder> <class name>\", got {line!r}")
        names[folder.strip()] = name.strip()
    return names


def _split_files(root: Path) -> list[Path]:
    return sorted({p for pattern in SPLIT_PATTERNS for p in root.glob(pattern)})


def load(root: Path) -> SplitDataset:
    if not root.is_dir():
        raise NotFound(f"--dataset {NAME}: --root_path {root} is not a folder; point it at a folder "
                        "with one sub-folder of images per class (or train/ and test/ sub-folders); "
                        "see DATASETS.md#folder")
    renames = read_classnames(root / CLASSNAMES_FILE) if (root / CLASSNAMES_FILE).is_file() else {}
    split_files = _split_files(root)
    if len(split_files) > 1:
        listed = ", ".join(p.name for p in split_files)
        raise UserError(f"--dataset {NAME}: {root} holds several split files ({listed}); keep one")
    if split_files:
        return _json_split(root, split_files[0], renames)
    if (root / "train").is_dir():
        return _explicit_split(root, renames)
    return _auto_split(root, renames)


def _renamed(root: Path, folders: list[str], renames: dict[str, str]) -> list[str]:
    unknown = sorted(set(renames) - set(folders))
    if unknown:
        raise UserError(f"--dataset {NAME}: {root / CLASSNAMES_FILE} names class(es) {unknown[:3]} that "
                        f"{root} does not have; fix the first word of those lines")
    return [renames.get(name, name) for name in folders]


def _json_split(root: Path, split_file: Path, renames: dict[str, str]) -> SplitDataset:
    parts = read_split_json(split_file, root)
    _require_inside(root, split_file, [item for items in parts.values() for item in items])
    split = checked_split(NAME, parts, split_file)
    names = _renamed(root, split.classnames, renames)
    if len(names) < 2:
        raise UserError(f"--dataset {NAME}: {split_file} lists {len(names)} class(es); few-shot classification "
                        "needs at least two (see DATASETS.md#folder)")

    def renamed(items: list[Item]) -> list[Item]:
        return [Item(item.source, item.label, names[item.label]) for item in items]

    # An empty val part (e.g. a split written from train/ and test/ folders) draws val from train,
    # as the folder layouts do, so pinning a split in a json does not change the few-shot draws.
    return SplitDataset(train=renamed(split.train), val=renamed(split.val), test=renamed(split.test),
                        classnames=names, val_from_train=not split.val)


def _require_inside(root: Path, split_file: Path, items: list[Item]) -> None:
    """A split file names images under its folder: an absolute path or a `..` that leaves --root_path is refused
    (a split file copied from elsewhere would otherwise train and test on files the folder does not hold). The
    check is on the paths as written: a symbolic link inside the folder is the folder owner's own choice."""
    inside = os.path.normpath(os.path.abspath(root))
    outside = [str(item.source) for item in items
               if os.path.commonpath([inside, os.path.normpath(os.path.abspath(item.source))]) != inside]
    if outside:
        raise UserError(f"--dataset {NAME}: {split_file} names {len(outside)} image(s) outside --root_path {root}, "
                        f"e.g. {outside[0]}; list paths relative to the folder that stay in it (no absolute paths, "
                        "no '..' out of it), see DATASETS.md#folder")


def _items(folder: Path, label_of: dict[str, int], names: list[str], split: str) -> list[Item]:
    items = []
    for class_folder in _class_folders(folder):
        if class_folder.name not in label_of:
            raise UserError(f"--dataset {NAME}: class {class_folder.name!r} in {folder} has no folder "
                            f"in {folder.parent / 'train'}; every {split} class must also be a train class")
        label = label_of[class_folder.name]
        items += [Item(str(p), label, names[label]) for p in _images(class_folder)]
    return items


def _explicit_split(root: Path, renames: dict[str, str]) -> SplitDataset:
    if not (root / "test").is_dir():
        raise UserError(f"--dataset {NAME}: {root / 'train'} exists but {root / 'test'} does not; "
                        "add test/<class>/ folders or use the one-folder-per-class layout")
    folders = [p.name for p in _class_folders(root / "train")]
    label_of = {name: i for i, name in enumerate(folders)}
    names = _renamed(root, folders, renames)
    train = _items(root / "train", label_of, names, "train")
    test = _items(root / "test", label_of, names, "test")
    has_val = (root / "val").is_dir()
    val = _items(root / "val", label_of, names, "val") if has_val else []
    _require_images(root / "train", train, names)
    return SplitDataset(train=train, val=val, test=test, classnames=names, val_from_train=not has_val)


def _auto_split(root: Path, renames: dict[str, str]) -> SplitDataset:
    folders = [p.name for p in _class_folders(root)]
    names = _renamed(root, folders, renames)
    train, val, test = [], [], []
    rng = random.Random(SPLIT_SEED)
    for label, folder in enumerate(folders):
        paths = _images(root / folder)
        rng.shuffle(paths)
        n_train = max(1, round(FRACTIONS[0] * len(paths)))
        n_val = round(FRACTIONS[1] * len(paths))
        items = [Item(str(p), label, names[label]) for p in paths]
        train += items[:n_train]
        val += items[n_train:n_train + n_val]
        test += items[n_train + n_val:]
    _require_images(root, train, names)
    # Classes of one or two images leave nothing for val: draw val from train as ImageNet does.
    return SplitDataset(train=train, val=val, test=test, classnames=names, val_from_train=not val)


def _require_images(root: Path, train: list[Item], names: list[str]) -> None:
    if len(names) < 2:
        raise UserError(f"--dataset {NAME}: {root} has {len(names)} class folder(s); "
                        "few-shot classification needs at least two (see DATASETS.md#folder)")
    empty = sorted(set(names) - {item.classname for item in train})
    if empty:
        raise UserError(f"--dataset {NAME}: no images for class(es) {empty} under {root}")


def coop_split(root: Path) -> dict[str, list[list]]:
    """The split `load` reads from a folder without a split file, as a CoOp split json's content.

    Paths are relative to `root` and class names are the folder names, so that the json, written
    to `root/split.json`, reads back as the same split (classnames.txt still applies) and no longer
    changes when images are added to the folder.
    """
    existing = _split_files(root) if root.is_dir() else []
    if existing:
        raise UserError(f"--dataset {NAME}: {existing[0]} already fixes the split of {root}; "
                        "delete it first to write a new one")
    split = load(root)
    folders = [p.name for p in _class_folders(root / "train" if (root / "train").is_dir() else root)]
    return {part: [[os.path.relpath(item.source, root), item.label, folders[item.label]] for item in items]
            for part, items in (("train", split.train), ("val", split.val), ("test", split.test))}
