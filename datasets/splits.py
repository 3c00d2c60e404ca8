"""Reading a benchmark dataset's fixed split from disk, once for all of them.

The benchmark modules only declare where their files are; these functions find the folder under
either naming convention (CoOp's or CLIP-LoRA's), read CoOp's split json, derive the class names,
and check every listed image before training starts, with errors that point into DATASETS.md.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from qlora_clip.errors import UserError
from qlora_clip.paper import CLIP_LORA_TEMPLATE

from qlora_clip.data.items import Item, SplitDataset

PARTS = ("train", "val", "test")


class NotFound(UserError):
    """A dataset folder or file is not where --root_path says it should be."""


class MissingImages(UserError):
    """Images a split lists are not on disk. Carries what was read, so check_data.py can go on
    checking the rest of the split instead of stopping at this error."""

    def __init__(self, message: str, missing: list[str], split: SplitDataset):
        super().__init__(message)
        self.missing = missing
        self.split = split


def see_docs(name: str) -> str:
    return f"see DATASETS.md#{name}"


def find_folder(name: str, root: Path, folders: Sequence[str], inside: str = "") -> Path:
    """The first `root/<folder>` of `folders` that holds `inside` (a sub-folder such as images/)."""
    wanted = [root / folder / inside for folder in folders]
    for folder, path in zip(folders, wanted):
        if path.is_dir():
            return root / folder
    also = f" (also looked for {', '.join(map(str, wanted[1:]))})" if len(wanted) > 1 else ""
    raise NotFound(f"--dataset {name}: {wanted[0]} not found{also}; {see_docs(name)}")


def require_file(name: str, path: Path, what: str) -> Path:
    if not path.is_file():
        raise NotFound(f"--dataset {name}: {what} {path} not found; download it into {path.parent} "
                        f"({see_docs(name)})")
    return path


def read_text(path: Path, what: str) -> str:
    """A text file of a dataset (class names, image lists), as UTF-8; a leading byte-order mark is allowed.

    Decoding with the locale's encoding instead would read the same file differently on two
    machines; a file that is not UTF-8 is refused, naming it and the first bad byte.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: the {what} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                        f"{err.start}); save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror or err})") from err


def read_coop_split(name: str, root: Path, folders: Sequence[str], image_dir: str, split_file: str,
                    template: str = CLIP_LORA_TEMPLATE,
                    fix_classname: Callable[[str], str] | None = None) -> SplitDataset:
    """A dataset whose split is one of CoOp's `split_zhou_*.json` files, beside its image folder.

    The json holds {"train"|"val"|"test": [[path relative to the image folder, label, class name]]};
    class names come from the train part, in label order, after the dataset's own fixes.
    """
    folder = find_folder(name, root, folders, image_dir)
    split_path = require_file(name, folder / split_file, "split file")
    parts = read_split_json(split_path, folder / image_dir, fix_classname)
    return checked_split(name, parts, split_path, template)


def read_split_json(split_path: Path, image_dir: Path,
                    fix_classname: Callable[[str], str] | None = None) -> dict[str, list[Item]]:
    try:
        record = json.loads(split_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{split_path}: not a readable split json ({err}); download it again") from err
    if not isinstance(record, dict) or any(not isinstance(record.get(part), list) for part in PARTS):
        raise UserError(f"{split_path}: a split json needs \"train\", \"val\" and \"test\" lists of "
                        "[relative_path, label, classname] entries")
    fix = fix_classname or (lambda classname: classname)
    prefix = str(image_dir)
    parts = {}
    for part in PARTS:
        items = []
        for index, entry in enumerate(record[part]):
            if (not isinstance(entry, (list, tuple)) or len(entry) != 3 or not isinstance(entry[0], str)
                    or not isinstance(entry[2], str)):
                raise UserError(f"{split_path}: {part}[{index}] = {entry!r}; expected "
                                "[relative_path, label, classname]")
            try:
                label = int(entry[1])
            except (TypeError, ValueError):
                raise UserError(f"{split_path}: {part}[{index}] has label {entry[1]!r}, not an integer") from None
            items.append(Item(os.path.join(prefix, entry[0]), label, fix(entry[2])))
        parts[part] = items
    return parts


def checked_split(name: str, parts: dict[str, list[Item]], listed_in: Path | str,
                  template: str = CLIP_LORA_TEMPLATE) -> SplitDataset:
    """The SplitDataset of `parts`, after checking labels, class names and that every image exists."""
    classnames = classnames_by_label(name, parts["train"], listed_in)
    for part in ("val", "test"):
        for item in parts[part]:
            if not 0 <= item.label < len(classnames) or classnames[item.label] != item.classname:
                raise UserError(f"--dataset {name}: {listed_in}: {part} image {item.source} has label "
                                f"{item.label} ({item.classname!r}), which no train image has; "
                                "the split file is damaged, download it again")
    split = SplitDataset(train=parts["train"], val=parts["val"], test=parts["test"],
                         classnames=classnames, template=template)
    # Fail now, naming the files, if any listed image is missing (not after an hour of training).
    missing = missing_images(item.source for part in PARTS for item in parts[part])
    if missing:
        examples = ", ".join(missing[:3])
        raise MissingImages(f"--dataset {name}: {len(missing)} image(s) listed in {listed_in} are missing on "
                            f"disk, e.g. {examples}; the download is incomplete or in the wrong folder "
                            f"({see_docs(name)}; `python check_data.py --dataset {name}` lists them all)",
                            missing, split)
    return split


def classnames_by_label(name: str, train: Sequence[Item], listed_in: Path | str) -> list[str]:
    """Class names in label order; labels must be 0..N-1 with one name each."""
    names: dict[int, str] = {}
    for item in train:
        if names.setdefault(item.label, item.classname) != item.classname:
            raise UserError(f"--dataset {name}: {listed_in}: label {item.label} is called both "
                            f"{names[item.label]!r} and {item.classname!r}")
    if not names:
        raise UserError(f"--dataset {name}: {listed_in} lists no train images; {see_docs(name)}")
    absent = sorted(set(range(max(names) + 1)) - set(names))
    if absent or min(names) < 0:
        raise UserError(f"--dataset {name}: {listed_in}: train labels are not 0..{max(names)} "
                        f"(no image with label(s) {absent[:5]}); the split file is damaged")
    return [names[label] for label in range(len(names))]


def missing_images(paths: Iterable[str]) -> list[str]:
    """The paths that are not files on disk, grouped by folder.

    One directory listing per folder instead of one stat per image: fast on network file systems.
    """
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        folder, filename = os.path.split(path)
        by_folder[folder].append(filename)
    missing = []
    for folder, filenames in by_folder.items():
        try:
            present = {entry.name for entry in os.scandir(folder) if not entry.is_dir()}
        except OSError:
            present = set()
        missing += [os.path.join(folder, f) for f in filenames if f not in present]
    return missing
