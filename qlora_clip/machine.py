"""What a run depends on from the machine it runs on: where the project keeps what it builds and caches, and
the versions of the libraries that compute its numbers."""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "torchvision", "transformers", "peft", "bitsandbytes", "accelerate")


def cache_root() -> Path:
    """Where built checkpoints and preprocessed test images go: $QLORA_CLIP_CACHE or ~/.cache/qlora-clip."""
    return Path(os.environ.get("QLORA_CLIP_CACHE", Path.home() / ".cache" / "qlora-clip"))


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
