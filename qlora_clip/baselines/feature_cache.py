"""Frozen image features on disk, shared by the baselines' runs: one file per key, atomic, verified.

A file holds one feature set (the test set, the val set, or a view set of the train images) as
float32 (views x images x dim), after a JSON header with its key, shape and CRC-32. It is written to
a temporary file, fsynced and renamed into place, so a reader never sees half a file; it is read
only when its key equals the one asked for and its size and checksum match, so a partial, corrupt
or stale file is re-encoded, never trusted. The key (features.FeatureBank.key) holds everything the
features depend on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = 1              # bump when the layout or what the features depend on changes
HEADER_BYTES = 4096
CHUNK = 64 * 1024 ** 2  # bytes per CRC-32 update


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(folder: Path, name: str, key: dict) -> Path:
    """<folder>/<name>-<digest of the key>.f32; `name` (dataset and set) only helps a reader of the folder."""
    return folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{key_digest(key)}.f32"


def load(path: Path, key: dict) -> torch.Tensor | None:
    """The cached features (float32, memory-mapped), or None when absent, partial, corrupt or of another key."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(HEADER_BYTES).rstrip(b"\0 "))
            shape = tuple(header.get("shape", ()))
            expected = HEADER_BYTES + 4 * int(np.prod(shape))
            if header.get("key") != key or not shape or os.fstat(f.fileno()).st_size != expected:
                raise ValueError("key or size differs")
            crc = 0
            while chunk := f.read(CHUNK):
                crc = zlib.crc32(chunk, crc)
            if crc != header.get("crc32"):
                raise ValueError("checksum differs")
    except (OSError, ValueError) as err:
        log.warning("feature cache %s is unusable (%s); encoding again", path, err)
        return None
    mapped = torch.from_file(str(path), shared=False, size=expected // 4, dtype=torch.float32)
    return mapped[HEADER_BYTES // 4:].view(shape)


def write(path: Path, key: dict, features: torch.Tensor) -> None:
    """Header, then the float32 features, to a temporary file; fsync; rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = features.detach().to("cpu", torch.float32).contiguous().numpy()
    flat = data.reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, CHUNK):
        crc = zlib.crc32(flat[start:start + CHUNK], crc)
    header = json.dumps({"key": key, "shape": list(data.shape), "crc32": crc}).encode()
    if len(header) > HEADER_BYTES:
        raise ValueError(f"feature-cache header of {len(header)} bytes exceeds {HEADER_BYTES}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.ljust(HEADER_BYTES, b" "))
            f.write(memoryview(flat))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
