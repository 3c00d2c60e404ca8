"""ImageNet (ILSVRC-2012): 1,000 classes; train/ and val/ as one folder per WordNet id.

There is no split file: train is every image of train/, test is val/, and the few-shot val set is
drawn from train together with the train shots (docs/protocol.md, "Few-shot sampling"). Folders and images are
listed exactly as torchvision's ImageFolder lists them (sorted), which is what CLIP-LoRA samples
from, so a seed draws the same images. Class names come from classnames.txt ("n01440764 tench").
"""
from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from qlora_clip.errors import UserError

from qlora_clip.data.items import Item, SplitDataset, SplitSizes
from .splits import NotFound, find_folder, read_text, require_file, see_docs

NAME = "imagenet"
# CoOp keeps the image folders in imagenet/images/, CLIP-LoRA directly in imagenet/.
FOLDERS = ("imagenet/images", "imagenet")
CLASSNAMES_FILE = "imagenet/classnames.txt"
TEMPLATE = "a photo of a {}."
# No val part: the few-shot val images are drawn from train.
SIZES = SplitSizes(classes=1_000, train=1_281_167, val=0, test=50_000)


def read_classnames(path: Path) -> dict[str, str]:
    """WordNet id -> class name, from lines "<wnid> <class name>"."""
    names = {}
    for number, line in enumerate(read_text(path, "class-name file").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name:
            raise UserError(f"{path}:{number}: expected \"<wnid> <class name>\", got {line!r}")
        names[wnid] = name
    return names


def _items(folder: Path, label_of: dict[str, int], classnames: list[str]) -> list[Item]:
    samples = make_dataset(str(folder), label_of, extensions=IMG_EXTENSIONS, allow_empty=True)
    return [Item(path, label, classnames[label]) for path, label in samples]


def load(root: Path) -> SplitDataset:
    images = find_folder(NAME, root, FOLDERS, "train")
    names = read_classnames(require_file(NAME, root / CLASSNAMES_FILE, "class-name file"))
    if not (images / "val").is_dir():
        raise NotFound(f"--dataset {NAME}: {images / 'val'} not found (the test images, one folder "
                        f"per class); {see_docs(NAME)}")
    wnids, label_of = find_classes(str(images / "train"))
    unnamed = [wnid for wnid in wnids if wnid not in names]
    if unnamed:
        raise UserError(f"--dataset {NAME}: {len(unnamed)} folder(s) of {images / 'train'} have no line in "
                        f"{root / CLASSNAMES_FILE}, e.g. {unnamed[:3]}; {see_docs(NAME)}")
    classnames = [names[wnid] for wnid in wnids]
    stray = sorted(p.name for p in (images / "val").iterdir() if p.is_dir() and p.name not in label_of)
    if stray:
        raise UserError(f"--dataset {NAME}: {images / 'val'} has class folder(s) {stray[:3]} that "
                        f"{images / 'train'} lacks; {see_docs(NAME)}")
    train = _items(images / "train", label_of, classnames)
    empty = sorted(set(wnids) - {wnids[item.label] for item in train})
    if empty:
        raise UserError(f"--dataset {NAME}: no images in {len(empty)} class folder(s) of "
                        f"{images / 'train'}, e.g. {empty[:3]}; {see_docs(NAME)}")
    return SplitDataset(train=train, val=[], test=_items(images / "val", label_of, classnames),
                        classnames=classnames, template=TEMPLATE, val_from_train=True)
