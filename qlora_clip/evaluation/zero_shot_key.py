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
from dataclasses import asdict

from qlora_clip.backbones.families import ImageSettings
from qlora_clip.backbones.identity import checkpoint_fingerprint
from qlora_clip.machine import library_versions

FORMAT = 1  # bump when what a zero-shot evaluation computes changes in a way the key does not see


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
