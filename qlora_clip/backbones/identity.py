"""What identifies a checkpoint's files, at the two strictnesses the project needs them.

- `checkpoint_fingerprint` (the caches: zero-shot accuracies, frozen features): every file of a
  local folder, or of a hub checkpoint's cached snapshot, by name, size and modification time, so a
  rebuilt or replaced checkpoint is never served an old number (hashing gigabytes of weights at
  every run would cost more than what the caches save).
- `base_fingerprint` (saved adapters, checked by --eval_only): config.json and the weight files'
  names and sizes, so a copied checkpoint still matches the adapters trained on it, while another
  checkpoint does not.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def folder_fingerprint(folder: Path) -> list[list]:
    """Name, size and modification time of each file of a checkpoint folder (links followed)."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()]


def checkpoint_fingerprint(source: str) -> dict:
    """A local checkpoint folder's files, or a hub checkpoint's cached snapshot (its commit and files)."""
    if os.path.isdir(source):
        folder = Path(source).resolve()
        return {"folder": str(folder), "files": folder_fingerprint(folder)}
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(source, "config.json")
    if isinstance(config, str):
        snapshot = Path(config).parent
        return {"hub_id": source, "snapshot": snapshot.name, "files": folder_fingerprint(snapshot)}
    return {"hub_id": source}


def base_fingerprint(source: str) -> str:
    """A local folder's config and the names and sizes of its weight files, digested; for a hub id, the id."""
    folder = Path(source)
    if not folder.is_dir():
        return source
    digest = hashlib.sha256()
    config = folder / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for path in sorted(folder.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]
