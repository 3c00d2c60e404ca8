"""Any folder of images as a test-only, unlabelled set: every image file under it, in any layout.

What an out-of-distribution set needs is images, not labels: it is scored with the classifier of
the run's own dataset. So every image file under the folder is taken, at any depth, sorted by path
(the order, and so the set, is the same on every machine), each with label 0 of one pseudo-class
named after the folder. Images are recognised by suffix, as `--dataset folder` does (.jpg .jpeg .png
.bmp .gif .webp .tif .tiff, any case). Hidden files and folders (a leading ".") are skipped: archives
made on macOS carry "._name.jpg" companions that are not images. Linked folders are followed, each
real folder once, so a link back up the tree cannot loop.

`build_image_collection(path)` is `--ood_datasets PATH`; the four OOD sets of MCM's ImageNet
benchmark (ood_*.py) read their folders with `collection_split`.
"""
from __future__ import annotations

import os
from pathlib import Path

from qlora_clip.errors import UserError

from qlora_clip.data.items import EvalImages, Item, SplitDataset
from .folder import IMAGE_SUFFIXES
from .splits import NotFound

OOD_FLAG = "--ood_datasets"


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, recursively, following linked folders once each, sorted."""
    found = []
    seen = set()
    for here, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(here) / name for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(path for path in found if path.is_file())


def collection_split(what: str, folder: Path, classname: str, docs: str) -> SplitDataset:
    """The images under `folder` as a test-only split: label 0, one class called `classname`.

    `what` names the dataset or flag in errors, `docs` says where to read about it.
    """
    if not folder.is_dir():
        raise NotFound(f"{what}: {folder} is not a folder; {docs}")
    images = image_files(folder)
    if not images:
        raise UserError(f"{what}: no image files under {folder} (looked for {' '.join(sorted(IMAGE_SUFFIXES))} "
                        f"at any depth); {docs}")
    return SplitDataset(train=[], val=[], test=[Item(str(path), 0, classname) for path in images],
                        classnames=[classname])


def build_image_collection(path: str | Path, flag: str = OOD_FLAG) -> EvalImages:
    """The images under the folder `path` as a test set (for `--ood_datasets PATH`), named by the path."""
    folder = Path(path).expanduser()
    docs = "give a folder that holds image files, in any layout (see DATASETS.md#any-image-folder-as-an-ood-set)"
    split = collection_split(f"{flag} {path}", folder, folder.resolve().name or str(folder), docs)
    return EvalImages(name=str(path), test=split.test, classnames=split.classnames, template=split.template,
                      load_image=split.load_image)
