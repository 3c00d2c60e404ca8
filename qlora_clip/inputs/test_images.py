"""The test images, preprocessed once per sweep: decoded, resized (and centre-cropped, for CLIP-like
processors; SigLIP's resize to the square), kept as uint8.

Both evaluations of a run (zero-shot and test) read the same preprocessed pixels, and a sweep's
runs on one dataset (15 per method in the paper's grid) share them through an on-disk cache:
one file per (dataset, test images, preprocessing), written atomically and verified (size and
CRC-32) when opened, so a partial or corrupt file is rebuilt, never trusted. The pixels are PIL's
bicubic resize (and centre crop, CLIP's; SigLIP's resizes to the square), exactly the per-run path's (loaders.eval_transform).

The cache folder (by default ~/.cache/qlora-clip, shared by every project of the user) may hold
entries of several copies of a dataset, so an entry is keyed by where the images are and what
is in them, not by their names: each file's resolved absolute path, size and modification time
(cache_key). Replacing images in place, or pointing --root_path at another folder with the same
layout, gives another entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from qlora_clip.data.items import Item
from qlora_clip.data.images import MissingImage
from qlora_clip import headed_file
from qlora_clip.cache_files import remove_stale_temporaries  # noqa: F401 - the cache's clean-up, named here too
from qlora_clip.errors import UserError, WorkerError, first_worker_error, raise_worker_error
from qlora_clip.headed_file import CHUNK, HEADER_BYTES

log = logging.getLogger(__name__)

FORMAT = 2              # bump when the file layout, the key or the preprocessing code changes
# Stat calls: a first batch in this thread; if it was slow (a network file system, where each
# call is a round trip), the rest in parallel threads. Measured on 50,000 files on a local ext4
# disk (2 cores, warm): 0.15 s serially, 0.25-0.45 s in 4-16 threads (they contend for the GIL);
# with 0.2 ms per call, 16 threads are 10x faster than one.
STAT_BATCH = 1024
SLOW_STAT_SECONDS = 20e-6
STAT_THREADS = 16


def cache_key(dataset: str, items: Sequence[Item], resize_size: int, image_size: int,
              load_image: Callable[[Any], Image.Image] | None = None, center_crop: bool = True) -> dict | None:
    """Everything the cached pixels depend on: the dataset, its test images (where they are and what
    is in them, with their labels, in order), the preprocessing (CLIP's resize and crop, or SigLIP's
    resize to the square) and the library that resamples.

    None when the images cannot be identified (sources that are not files, from a loader that names
    no source files): such a test set is not cached.
    """
    identity = images_identity(items, load_image)
    if identity is None:
        return None
    listing = json.dumps([identity, [item.label for item in items]]).encode()
    return {"format": FORMAT, "dataset": dataset, "test_images_sha256": hashlib.sha256(listing).hexdigest(),
            "images": len(items), "resize": resize_size if center_crop else "square", "crop": image_size,
            "interpolation": "bicubic", "pillow": PIL.__version__}


def images_identity(items: Sequence[Item], load_image: Callable[[Any], Image.Image] | None) -> list | None:
    """What identifies the test images' pixels cheaply, as JSON-able data.

    Image files: per file, its resolved absolute path (so equal relative paths under two roots, or
    from two working directories, differ), size and modification time in nanoseconds; a file
    replaced in place gets a new time. Contents are not hashed: that would read the whole test set
    (6.4 GB for ImageNet) at every run. A tool that restores the modification time of a file whose
    content changed but whose size did not would go unnoticed.

    Other sources (Fashion-MNIST's are indices into its IDX files): the sources, and the files the
    loader reads them from (`load_image.source_files`), each with its content's SHA-256, since
    these are a few files read whole anyway.
    """
    sources = [item.source for item in items]
    if all(isinstance(source, (str, os.PathLike)) for source in sources):
        return file_identities(sources)
    files = getattr(load_image, "source_files", None)
    if files is None:
        return None
    return [[str(source) for source in sources], [_hashed_file_identity(path) for path in files]]


def file_identities(paths: Sequence[str | os.PathLike]) -> list[list]:
    """[resolved path, size, mtime_ns] per file, in order (stat calls in threads when they are slow)."""
    resolved = _resolved_paths(paths)
    first = time.perf_counter()
    head = [_stat(path) for path in resolved[:STAT_BATCH]]
    rest = resolved[STAT_BATCH:]
    if rest and time.perf_counter() - first > SLOW_STAT_SECONDS * len(head):
        batches = [rest[i:i + STAT_BATCH] for i in range(0, len(rest), STAT_BATCH)]
        with ThreadPoolExecutor(STAT_THREADS) as pool:
            tail = [stat for batch in pool.map(lambda b: [_stat(path) for path in b], batches) for stat in batch]
    else:
        tail = [_stat(path) for path in rest]
    return [[path, *stat] for path, stat in zip(resolved, head + tail)]


def _resolved_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Absolute paths with symbolic links resolved, resolving each folder once (not each file's)."""
    folders: dict[str, str] = {}
    resolved = []
    for path in paths:
        folder, name = os.path.split(os.fspath(path))
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        resolved.append(os.path.join(folders[folder], name))
    return resolved


def _stat(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise MissingImage(f"{path}: test image not found; restore it, or check the dataset with "
                           "check_data.py") from None
    return stat.st_size, stat.st_mtime_ns


def _hashed_file_identity(path: str | os.PathLike) -> list:
    resolved = os.path.realpath(path)
    digest = hashlib.sha256()
    with open(resolved, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    size, mtime_ns = _stat(resolved)
    return [resolved, size, mtime_ns, digest.hexdigest()]


def cache_path(folder: Path, key: dict) -> Path:
    """The cache file of `key` inside `folder`. The dataset may be a folder's path (--ood_datasets PATH): its name
    is made one file name, so the file stays in the cache folder (the digest of the whole key tells sets apart)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key["dataset"])).strip("_.") or "images"
    return folder / f"{name}-{key['crop']}px-{digest}.u8"


class _Preprocessed(Dataset):
    """Test image i as a CHW uint8 tensor (for the parallel first fill)."""

    def __init__(self, items: Sequence[Item], load_image: Callable[[Any], Image.Image], transform: Callable):
        self.items, self.load_image, self.transform = items, load_image, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor | WorkerError:
        try:
            return self.transform(self.load_image(self.items[index].source))
        except UserError as err:  # an unreadable image: its one-line message, not a worker's traceback
            return WorkerError(str(err))


def _stack_or_error(samples: list) -> torch.Tensor | WorkerError:
    return first_worker_error(samples) or default_collate(samples)


def preprocess(items: Sequence[Item], load_image: Callable, transform: Callable, image_size: int,
               num_workers: int, out: torch.Tensor | None = None, desc: str = "preparing test images") -> torch.Tensor:
    """All images through `transform` (PIL in, CHW uint8 out) into `out` (N, 3, S, S), in parallel."""
    if out is None:
        out = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
    # Its own generator: starting the loader must not draw from the global one (training's dropout).
    loader = DataLoader(_Preprocessed(items, load_image, transform), batch_size=64, num_workers=num_workers,
                        collate_fn=_stack_or_error, generator=torch.Generator())
    start = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        raise_worker_error(batch)
        out[start:start + len(batch)] = batch
        start += len(batch)
    return out


def load_cached(path: Path, key: dict) -> torch.Tensor | None:
    """The cached pixels, memory-mapped, or None when the file is absent, partial or corrupt."""
    if not path.is_file():
        return None
    n, size = key["images"], key["crop"]
    expected = HEADER_BYTES + n * 3 * size * size
    try:
        headed_file.read_header(path, key, lambda header: n * 3 * size * size)
    except (OSError, ValueError) as err:
        log.warning("test-image cache %s is unusable (%s); rebuilding it", path, err)
        return None
    mapped = torch.from_file(str(path), shared=False, size=expected, dtype=torch.uint8)
    return mapped[HEADER_BYTES:].view(n, 3, size, size)


def write_cache(path: Path, key: dict, pixels: torch.Tensor) -> None:
    """Header, then pixels, written atomically (cache_files.atomic_file: never a partial file, and what killed
    writers left in the folder removed first)."""
    headed_file.write(path, {"key": key}, pixels.numpy())


COMPUTE_KEY = object()  # prepared_test_images' default: compute the cache key itself


def prepared_test_images(dataset: str, items: Sequence[Item], load_image: Callable, transform: Callable, resize_size: int,
                image_size: int, cache_dir: str | None, num_workers: int, rank: int = 0,
                world: int = 1, center_crop: bool = True, key: dict | None | object = COMPUTE_KEY
                ) -> tuple[torch.Tensor, list[int]]:
    """This process's share of the preprocessed test images (items rank, rank + world, ...) and labels.

    One process reads the cache, or fills it on first use. Several processes read a cache that
    exists; otherwise each prepares only its own share, in memory (they are not synchronised to
    write one file together). `key`: the images' cache_key when the caller has it already (it stats,
    and may hash, every file), else computed here.
    """
    if key is COMPUTE_KEY:
        key = cache_key(dataset, items, resize_size, image_size, load_image, center_crop) if cache_dir else None
    if cache_dir and key is None:
        log.warning("the test images of %s are not files and their loader names no source files, so they "
                    "cannot be identified on disk: keeping them in memory only (no --eval_cache_dir entry)",
                    dataset)
    path = cache_path(Path(cache_dir), key) if cache_dir and key is not None else None
    pixels = load_cached(path, key) if path else None
    if pixels is not None:
        log.info("test images of %s from the cache %s", dataset, path)
    elif path is not None and world == 1:
        pixels = preprocess(items, load_image, transform, image_size, num_workers)
        store_in_cache(path, key, pixels, dataset)
    else:
        share = list(items[rank::world])
        labels = [item.label for item in share]
        return preprocess(share, load_image, transform, image_size, num_workers), labels
    share = range(rank, len(items), world)
    labels = [items[i].label for i in share]
    return (pixels if world == 1 else pixels[rank::world]), labels


def store_in_cache(path: Path, key: dict, pixels: torch.Tensor, dataset: str) -> None:
    """Write the cache entry; when that fails (a full disk), say so and go on with the pixels in memory.

    The cache only saves later runs the preprocessing, so a run does not stop for it.
    """
    try:
        write_cache(path, key, pixels)
    except OSError as err:
        log.warning("could not write the test-image cache %s (%s): keeping the test images of %s in memory "
                    "for this run only; free space in --eval_cache_dir or choose another folder",
                    path, err.strerror or err, dataset)
        return
    log.info("test images of %s cached in %s (%.2f GB)", dataset, path, pixels.numel() / 1024 ** 3)
