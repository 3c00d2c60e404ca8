"""Fashion-MNIST: the offline demo dataset (28x28 grey images, 10 classes).

Read from the four standard IDX files (gzipped or not) under `<root>/fashion_mnist` or, if absent,
the Debian package's folder. Test = the t10k file; val = a fixed 10,000-image part of the train
file chosen with a fixed seed, so that every run seed sees the same split.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from qlora_clip.errors import UserError

from qlora_clip.data.images import to_rgb

from qlora_clip.data.items import Item, SplitDataset, SplitSizes
from .splits import NotFound

FOLDERS = ("fashion_mnist", "fashion-mnist")
SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")
# Class names as the dataset card lists them, in label order.
CLASSNAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TEMPLATE = "a photo of a {}."
VAL_SIZE = 10_000
SPLIT_SEED = 0
SIZES = SplitSizes(classes=10, train=60_000 - VAL_SIZE, val=VAL_SIZE, test=10_000)


def find_folder(root: Path) -> Path:
    candidates = [root / name for name in FOLDERS] + [SYSTEM_FOLDER]
    for folder in candidates:
        if _idx_path(folder, "train-images-idx3-ubyte") is not None:
            return folder
    raise NotFound(
        f"--dataset fashion_mnist: no Fashion-MNIST IDX files in {' or '.join(map(str, candidates))}. "
        "Install them with `apt-get install dataset-fashion-mnist`, or copy train-images-idx3-ubyte.gz, "
        f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz into "
        f"{root / FOLDERS[0]}."
    )


def _idx_path(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: magic (0, 0, dtype code, ndim), ndim big-endian sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # a cut-short or damaged download
        raise UserError(f"{path}: cannot read it ({type(err).__name__}: {err}); re-download it") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file; re-download it")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path}: truncated ({data.size} bytes of data for shape {shape}); re-download it")
    return data.reshape(shape)


def _read_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    files = {kind: _idx_path(folder, f"{part}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    missing = [kind for kind, path in files.items() if path is None]
    if missing:
        raise UserError(f"--dataset fashion_mnist: {folder} lacks {part}-{missing[0]}(.gz)")
    images, labels = read_idx(files["images-idx3-ubyte"]), read_idx(files["labels-idx1-ubyte"])
    if len(images) != len(labels):
        raise UserError(f"--dataset fashion_mnist: {folder}: {len(images)} {part} images but {len(labels)} labels")
    return images, labels


class _ArrayImages:
    """Loads item `i` from an in-memory uint8 array (picklable for DataLoader workers).

    `source_files`: the IDX files the array was read from, which identify its pixels (the
    test-image cache keys on them, since the items' sources are only indices).
    """

    def __init__(self, images: np.ndarray, source_files: tuple[str, ...] = ()):
        self.images = images
        self.source_files = source_files

    def __call__(self, index: int) -> Image.Image:
        return to_rgb(Image.fromarray(self.images[index]), index)


def load(root: Path) -> SplitDataset:
    folder = find_folder(root)
    train_images, train_labels = _read_part(folder, "train")
    test_images, test_labels = _read_part(folder, "t10k")
    images = np.concatenate([train_images, test_images])
    labels = np.concatenate([train_labels, test_labels]).tolist()

    def items(indices) -> list[Item]:
        return [Item(int(i), labels[i], CLASSNAMES[labels[i]]) for i in indices]

    order = np.random.default_rng(SPLIT_SEED).permutation(len(train_images))
    val_indices = np.sort(order[:VAL_SIZE])
    train_indices = np.sort(order[VAL_SIZE:])
    test_indices = range(len(train_images), len(images))
    image_files = tuple(str(_idx_path(folder, f"{part}-images-idx3-ubyte")) for part in ("train", "t10k"))
    return SplitDataset(train=items(train_indices), val=items(val_indices), test=items(test_indices),
                        classnames=list(CLASSNAMES), template=TEMPLATE,
                        load_image=_ArrayImages(images, image_files))
