"""A small, deterministic, randomly initialised CLIP checkpoint built offline.

It is a real Hugging Face checkpoint folder (config, safetensors weights, tokenizer, image
processor), so `--backbone tiny` goes through exactly the same `from_pretrained` code as
ViT-B/16. Its weights are random: it exists to run and test the pipeline without a download.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

# Bump when the recipe below changes, so stale caches are rebuilt rather than reused.
TINY_VERSION = 1
TINY_LAYERS = 6  # six layers so every --position selects a distinct, non-empty set
# Every linear layer is 64 wide: bitsandbytes quantizes in blocks of 64, and its CPU kernels need
# whole blocks per row.
TINY_IMAGE_SIZE = 32


def cache_root() -> Path:
    return Path(os.environ.get("QLORA_CLIP_CACHE", Path.home() / ".cache" / "qlora-clip"))


def tiny_checkpoint_dir() -> Path:
    """The tiny checkpoint's folder, built on first use."""
    target = cache_root() / f"tiny-clip-v{TINY_VERSION}"
    if not (target / "model.safetensors").exists():
        build_tiny_checkpoint(target)
    return target


def _byte_level_tokenizer() -> CLIPTokenizer:
    # CLIP's BPE over bytes with no merges: every character is a token. Small and sufficient.
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def build_tiny_checkpoint(target: Path) -> None:
    tokenizer = _byte_level_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=TINY_LAYERS, num_attention_heads=2, max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=TINY_LAYERS,
            num_attention_heads=2, image_size=TINY_IMAGE_SIZE, patch_size=8,
        ),
        projection_dim=64,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = CLIPModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    # Build in a temporary folder and rename it into place, so that an interrupted build or two
    # processes building at once never leave a half-written checkpoint behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        processor.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
