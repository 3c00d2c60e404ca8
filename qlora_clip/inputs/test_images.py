"""The test images, preprocessed once per sweep: decoded, resized (and centre-cropped, for CLIP-like
processors; SigLIP's resize to the square), kept as uint8.

Both evaluations of a run (zero-shot and test) read the same preprocessed pixels, and a sweep's
runs on one dataset (15 per method in the paper's grid) share them through an on-disk cache:
one file per (dataset, test list, preprocessing), written atomically and verified (size and
CRC-32) when opened, so a partial or corrupt file is rebuilt, never trusted. The pixels are PIL's
bicubic resize (and centre crop), exactly the per-run path's (loaders.eval_transform).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets import Item

log = logging.getLogger(__name__)

FORMAT = 1              # bump when the file layout or the preprocessing code changes
HEADER_BYTES = 4096     # JSON header, padded; the pixels follow
CHUNK = 64 * 1024 ** 2  # bytes per CRC-32 update


def cache_key(dataset: str, items: Sequence[Item], resize_size: int, image_size: int,
              center_crop: bool = True) -> dict:
    """Everything the cached pixels depend on: the dataset, its test list (paths and labels, in
    order), the preprocessing (CLIP's resize and crop, or SigLIP's resize to the square) and the
    library that resamples."""
    listing = json.dumps([[str(item.source), item.label] for item in items]).encode()
    return {"format": FORMAT, "dataset": dataset, "test_list_sha256": hashlib.sha256(listing).hexdigest(),
            "images": len(items), "resize": resize_size if center_crop else "square", "crop": image_size,
            "interpolation": "bicubic", "pillow": PIL.__version__}


def cache_path(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"{key['dataset']}-{key['crop']}px-{digest}.u8"


class _Preprocessed(Dataset):
    """Test image i as a CHW uint8 tensor (for the parallel first fill)."""

    def __init__(self, items: Sequence[Item], load_image: Callable[[Any], Image.Image], transform: Callable):
        self.items, self.load_image, self.transform = items, load_image, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.load_image(self.items[index].source))


def preprocess(items: Sequence[Item], load_image: Callable, transform: Callable, image_size: int,
               num_workers: int, out: torch.Tensor | None = None, desc: str = "preparing test images") -> torch.Tensor:
    """All images through `transform` (PIL in, CHW uint8 out) into `out` (N, 3, S, S), in parallel."""
    if out is None:
        out = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
    # Its own generator: starting the loader must not draw from the global one (training's dropout).
    loader = DataLoader(_Preprocessed(items, load_image, transform), batch_size=64, num_workers=num_workers,
                        generator=torch.Generator())
    start = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
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
        with open(path, "rb") as f:
            header = json.loads(f.read(HEADER_BYTES).rstrip(b"\0 "))
            if header.get("key") != key or os.fstat(f.fileno()).st_size != expected:
                raise ValueError("key or size differs")
            crc = 0
            while chunk := f.read(CHUNK):
                crc = zlib.crc32(chunk, crc)
            if crc != header.get("crc32"):
                raise ValueError("checksum differs")
    except (OSError, ValueError) as err:
        log.warning("test-image cache %s is unusable (%s); rebuilding it", path, err)
        return None
    mapped = torch.from_file(str(path), shared=False, size=expected, dtype=torch.uint8)
    return mapped[HEADER_BYTES:].view(n, 3, size, size)


def write_cache(path: Path, key: dict, pixels: torch.Tensor) -> None:
    """Header, then pixels, to a temporary file; fsync; rename into place (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pixels.numpy().reshape(-1)
    crc = 0
    for start in range(0, data.size, CHUNK):
        crc = zlib.crc32(data[start:start + CHUNK], crc)
    header = json.dumps({"key": key, "crc32": crc}).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.ljust(HEADER_BYTES, b" "))
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepared_test_images(dataset: str, items: Sequence[Item], load_image: Callable, transform: Callable, resize_size: int,
                image_size: int, cache_dir: str | None, num_workers: int, rank: int = 0,
                world: int = 1, center_crop: bool = True) -> tuple[torch.Tensor, list[int]]:
    """This process's share of the preprocessed test images (items rank, rank + world, ...) and labels.

    One process reads the cache, or fills it on first use. Several processes read a cache that
    exists; otherwise each prepares only its own share, in memory (they are not synchronised to
    write one file together).
    """
    key = cache_key(dataset, items, resize_size, image_size, center_crop)
    path = cache_path(Path(cache_dir), key) if cache_dir else None
    pixels = load_cached(path, key) if path else None
    if pixels is not None:
        log.info("test images of %s from the cache %s", dataset, path)
    elif path is not None and world == 1:
        pixels = preprocess(items, load_image, transform, image_size, num_workers)
        write_cache(path, key, pixels)
        log.info("test images of %s cached in %s (%.2f GB)", dataset, path, pixels.numel() / 1024 ** 3)
    else:
        share = list(items[rank::world])
        labels = [item.label for item in share]
        return preprocess(share, load_image, transform, image_size, num_workers), labels
    share = range(rank, len(items), world)
    labels = [items[i].label for i in share]
    return (pixels if world == 1 else pixels[rank::world]), labels
