"""What a zero-shot accuracy depends on: the key of its entry in the zero-shot store (zero_shot_cache.py).

The base model's part (`base_key`): the checkpoint (resolved, with a fingerprint of its files), the
compute dtype, whether the base is 4-bit NF4 (a different model), the image preprocessing, the
device type, the prompts' length-bucket limit and the library versions. The test set's part
(`test_set_key`): the test-image cache's key (the dataset, its test list, the preprocessing:
test_images.cache_key, so the two caches always agree on what a test set is) and the class
prompts in label order, which carry the template and the protocol's classes (base2new's base and
new halves, an --eval_datasets target's own names). Left out on purpose: the adapter (zero-shot
switches it off) and how the work is spread (processes, evaluation batch size), which changes
only the rounding of the features.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from qlora_clip.config import ImageSettings
from qlora_clip.run.results import library_versions

FORMAT = 1  # bump when what a zero-shot evaluation computes changes in a way the key does not see


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


def base_key(source: str, compute_dtype: str, quantized: bool, image: ImageSettings, device_type: str,
             text_buckets: int) -> dict:
    """The base model's part of a zero-shot key (`source`: what from_pretrained loaded)."""
    return {"format": FORMAT, "checkpoint": checkpoint_fingerprint(source), "compute_dtype": compute_dtype,
            "base_4bit_nf4": quantized, "image": asdict(image), "device_type": device_type,
            "text_buckets": text_buckets, "versions": library_versions()}


def test_set_key(test_images_key: dict, prompts: list[str]) -> dict:
    """The test set's part: the test-image cache's key and the class prompts, in label order."""
    return {"test_images": test_images_key,
            "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(), "classes": len(prompts)}
