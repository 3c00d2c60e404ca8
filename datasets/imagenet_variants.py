"""The ImageNet variants of domain generalization, read in CoOp's layouts. All are test-only.

Two layouts: ImageNet-V2 numbers its class folders 0-999 in the order of ImageNet's
classnames.txt; ImageNet-Sketch, -A and -R name them by WordNet id, and their labels are the
positions of the sorted folder names, so the classifier holds exactly the classes present (200 for
-A and -R). Class names come from ImageNet's classnames.txt, read from the variant's own folder
(CoOp keeps a copy there) or else from DATA/imagenet/.
"""
from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from qlora_clip.errors import UserError

from qlora_clip.data.items import Item, SplitDataset
from .imagenet import read_classnames
from .splits import find_folder, see_docs

CLASSNAMES_FILE = "classnames.txt"
IMAGENET_CLASSNAMES = Path("imagenet") / CLASSNAMES_FILE
TEMPLATE = "a photo of a {}."  # CoOp's prompt for ImageNet and its variants


def classnames_file(name: str, root: Path, folder: str) -> Path:
    """The variant's copy of classnames.txt, else ImageNet's own."""
    candidates = (root / folder / CLASSNAMES_FILE, root / IMAGENET_CLASSNAMES)
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"--dataset {name}: no class-name file at {candidates[0]} or {candidates[1]}; copy "
                    f"ImageNet's classnames.txt (\"n01440764 tench\" lines) into {root / folder} ({see_docs(name)})")


def _test_only(name: str, images: Path, test: list[Item], classnames: list[str]) -> SplitDataset:
    if not test:
        raise UserError(f"--dataset {name}: no images under {images}; {see_docs(name)}")
    return SplitDataset(train=[], val=[], test=test, classnames=classnames, template=TEMPLATE)


def _items(images: Path, label_of: dict[str, int], classnames: list[str]) -> list[Item]:
    samples = make_dataset(str(images), label_of, extensions=IMG_EXTENSIONS, allow_empty=True)
    return [Item(path, label, classnames[label]) for path, label in samples]


def load_numbered_folders(name: str, root: Path, folder: str, image_dir: str) -> SplitDataset:
    """Class folders 0..N-1: folder i holds class i, the i-th line of classnames.txt; all N classes compete."""
    images = find_folder(name, root, (folder,), image_dir) / image_dir
    classnames = list(read_classnames(classnames_file(name, root, folder)).values())
    folders = sorted(p.name for p in images.iterdir() if p.is_dir())
    stray = [f for f in folders if not (f.isdigit() and int(f) < len(classnames))]
    if stray:
        raise UserError(f"--dataset {name}: {images} has folder(s) {stray[:3]} that are not class numbers "
                        f"0-{len(classnames) - 1} (one per line of the class-name file); {see_docs(name)}")
    return _test_only(name, images, _items(images, {f: int(f) for f in folders}, classnames), classnames)


def load_wnid_folders(name: str, root: Path, folder: str, image_dir: str) -> SplitDataset:
    """Class folders named by WordNet id: labels follow the sorted folder names, and only they compete."""
    images = find_folder(name, root, (folder,), image_dir) / image_dir
    names = read_classnames(classnames_file(name, root, folder))
    try:
        wnids, label_of = find_classes(str(images))
    except FileNotFoundError:
        raise UserError(f"--dataset {name}: {images} has no class folders; {see_docs(name)}") from None
    unnamed = [wnid for wnid in wnids if wnid not in names]
    if unnamed:
        raise UserError(f"--dataset {name}: {len(unnamed)} folder(s) of {images} have no line in "
                        f"{classnames_file(name, root, folder)}, e.g. {unnamed[:3]}; {see_docs(name)}")
    classnames = [names[wnid] for wnid in wnids]
    test = _items(images, label_of, classnames)
    empty = sorted(set(wnids) - {wnids[item.label] for item in test})
    if empty:
        raise UserError(f"--dataset {name}: no images in {len(empty)} class folder(s) of {images}, "
                        f"e.g. {empty[:3]}; the download is incomplete ({see_docs(name)})")
    return _test_only(name, images, test, classnames)
