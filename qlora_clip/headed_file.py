"""Cache files of one layout: a JSON header padded to HEADER_BYTES, then one raw array.

The test-image cache (inputs/test_images.py) and the frozen-feature cache (evaluation/feature_cache.py)
both store their arrays this way. A file is written as every cache file is (cache_files.atomic_file:
a temporary file beside its place, fsynced and renamed into place, so no reader ever sees a partial
one, and killed writers' leftovers removed); the header carries the CRC-32 of the array, which
`read_header` checks before the array is mapped.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from qlora_clip.cache_files import atomic_file

HEADER_BYTES = 4096          # JSON header, padded with spaces; the array follows
CHUNK = 64 * 1024 ** 2       # bytes per CRC-32 update


def write(path: Path, header: dict, array: np.ndarray) -> None:
    """`header` (with the array's CRC-32 added) and the C-contiguous `array`, atomically at `path`."""
    flat = array.reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, CHUNK):
        crc = zlib.crc32(flat[start:start + CHUNK], crc)
    encoded = json.dumps({**header, "crc32": crc}).encode()
    if len(encoded) > HEADER_BYTES:
        raise ValueError(f"cache header of {len(encoded)} bytes exceeds {HEADER_BYTES}")
    with atomic_file(path) as f:
        f.write(encoded.ljust(HEADER_BYTES, b" "))
        f.write(memoryview(flat))


def read_header(path: Path, key: dict, array_bytes: Callable[[dict], int]) -> dict:
    """The header of a complete, intact file of `key`; ValueError (or OSError) naming what is wrong.

    `array_bytes(header)`: the size the array of that header must have.
    """
    with open(path, "rb") as f:
        header = json.loads(f.read(HEADER_BYTES).rstrip(b"\0 "))
        if header.get("key") != key or os.fstat(f.fileno()).st_size != HEADER_BYTES + array_bytes(header):
            raise ValueError("key or size differs")
        crc = 0
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
        if crc != header.get("crc32"):
            raise ValueError("checksum differs")
    return header
