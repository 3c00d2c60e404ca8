"""The frozen CLIP a baseline runs on: the base checkpoint as model.py loads it, with no adapter."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache

from qlora_clip.config import AdapterConfig, ModelConfig
from qlora_clip.errors import UserError
from qlora_clip.backbones.families import CLIP, family_of, image_settings, load_tokenizer
from qlora_clip.backbones.loading import ClipBundle, load_base_model, resolve_backbone

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_frozen_clip(backbone: str, mode: str, device: torch.device, dtype: torch.dtype) -> ClipBundle:
    """Base CLIP, every weight frozen, in eval mode, with its tokenizer and image settings.

    Loaded through model.load_base_model, so a baseline sees exactly the base a LoRA run starts from.
    The baselines are CLIP's (their logits are CLIP-LoRA's 100 x cosine, CoOp's prompt is built on
    CLIP's tokens): another family's checkpoint is refused before its weights load.
    """
    source = resolve_backbone(backbone)
    family = family_of(source, backbone)
    if family is not CLIP:
        raise UserError(f"--mode {mode}: the baselines run on CLIP-format checkpoints only (their logits and "
                        f"CoOp's prompt are CLIP's); --backbone {backbone} is a {family.label} checkpoint")
    tokenizer = load_tokenizer(family, source, backbone)
    image = image_settings(source, backbone)
    model = load_base_model(source, family, ModelConfig(backbone=backbone, adapter=AdapterConfig(mode=mode)), device,
                            dtype)
    model.requires_grad_(False)
    model.eval()
    return ClipBundle(model=model, tokenizer=tokenizer, image=image, text=family.text_settings(model.config),
                      family=family)


def weights_identity(source: str) -> dict:
    """What tells two checkpoints apart in a feature-cache key: the source, and for a local folder its
    weight file's name, size and modification time (a rebuilt checkpoint gets new features; hashing
    gigabytes of weights at every run would cost more than the encoding the cache saves)."""
    identity: dict = {"source": source}
    for path in _weight_files(source):
        stat = path.stat()
        # A hub checkpoint's cached path holds its snapshot's commit: a new revision is a new key.
        identity.update(weights=str(path) if not os.path.isdir(source) else path.name, size=stat.st_size,
                        mtime_ns=stat.st_mtime_ns)
        break
    return identity


def _weight_files(source: str) -> list[Path]:
    """The weight file of a local folder, or of a hub id's snapshot in the local Hugging Face cache."""
    folder = Path(os.path.expanduser(source))
    if folder.is_dir():
        return [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    found = []
    for name in WEIGHT_FILES:
        try:
            cached = try_to_load_from_cache(source, name)
        except ValueError:  # not a hub id either (HFValidationError): the source alone is the identity
            return []
        if isinstance(cached, str) and Path(cached).is_file():
            found.append(Path(cached))
    return found
