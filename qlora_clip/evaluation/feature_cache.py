"""Frozen image features on disk, shared by a sweep's runs: one file per key, atomic, verified.

Two kinds of features are stored this way: a test set's embeddings when the method leaves the
vision tower frozen (evaluator.FrozenEmbeddings: every baseline, a text-only adapter, a prompt
learner), and the baselines' train views and val images (methods/baselines/features.FeatureBank).
A file holds one feature set as float32 (views x images x dim), after a JSON header with its key,
shape and CRC-32. It is written as
every cache file is (qlora_clip/cache_files.py), so a reader never sees half a file; it is read
only when its key equals the one asked for and its size and checksum match, so a partial, corrupt
or stale file is re-encoded, never trusted. The key holds everything the features depend on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch

from qlora_clip import headed_file
from qlora_clip.headed_file import HEADER_BYTES

log = logging.getLogger(__name__)

FORMAT = 2              # bump when the layout or what the features depend on changes (2: the checkpoint fingerprint)


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
        shape = _shape(headed_file.read_header(path, key, lambda header: 4 * int(np.prod(_shape(header)))))
    except (OSError, ValueError) as err:
        log.warning("feature cache %s is unusable (%s); encoding again", path, err)
        return None
    expected = HEADER_BYTES + 4 * int(np.prod(shape))
    mapped = torch.from_file(str(path), shared=False, size=expected // 4, dtype=torch.float32)
    return mapped[HEADER_BYTES // 4:].view(shape)


def _shape(header: dict) -> tuple[int, ...]:
    shape = header.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f"its header's shape is {shape!r}")
    return tuple(shape)


def write(path: Path, key: dict, features: torch.Tensor) -> None:
    """Header, then the float32 features, written atomically (a killed writer's leftovers removed first:
    cache_files.py)."""
    data = features.detach().to("cpu", torch.float32).contiguous().numpy()
    headed_file.write(path, {"key": key, "shape": list(data.shape)}, data)
