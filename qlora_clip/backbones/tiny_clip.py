"""A small, deterministic, randomly initialised CLIP checkpoint built offline.

It is a real Hugging Face checkpoint folder (config, safetensors weights, tokenizer, image
processor), so `--backbone tiny` goes through exactly the same `from_pretrained` code as
ViT-B/16. Its weights are random: it exists to run and test the pipeline without a download.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from qlora_clip.machine import cache_root

# Bump when the recipe below changes, so stale caches are rebuilt rather than reused.
# 2: logit_scale ln(100), as OpenAI's checkpoints hold it, so the checkpoint's own logits_per_image
# equal CLIP-LoRA's fixed 100 x cosine (tests/test_backbones_logits.py); no other weight changed.
TINY_VERSION = 2
# Six layers: every --position selects a non-empty set of layers (half-up and top3 coincide at this
# depth, both 3-5).
TINY_LAYERS = 6
# Every linear layer is 64 wide: bitsandbytes quantizes in blocks of 64, and its CPU kernels need
# whole blocks per row.
TINY_IMAGE_SIZE = 32
# OpenAI's CLIP learned its temperature up to the clamp at 100; CLIP-LoRA fixes it there.
CLIP_LOGIT_SCALE = math.log(100)


def tiny_checkpoint_path() -> Path:
    """Where the tiny checkpoint is, or will be once built."""
    return cache_root() / f"tiny-clip-v{TINY_VERSION}"


def tiny_checkpoint_dir() -> Path:
    """The tiny checkpoint's folder, built on first use."""
    target = tiny_checkpoint_path()
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
        projection_dim=64, logit_scale_init_value=CLIP_LOGIT_SCALE,
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    save_seeded_checkpoint(target, CLIPModel, config, tokenizer, processor)


# Random checkpoints in the real shapes of the CLIP-LoRA backbones, for benchmarks: the layer
# widths, depths and sequence lengths (hence the FLOPs and memory) of OpenAI's checkpoints, built
# offline. The tokenizer is the tiny one (one token per character) over the real 49,408-row
# embedding, so benchmarks choose prompt lengths in tokens explicitly rather than from text.
_CLIP_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
REAL_SHAPES = {
    "ViT-B/32": dict(text=_CLIP_TEXT, projection_dim=512,
                     vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, image_size=224, patch_size=32)),
    "ViT-B/16": dict(text=_CLIP_TEXT, projection_dim=512,
                     vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, image_size=224, patch_size=16)),
    "ViT-L/14": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12),
                     projection_dim=768,
                     vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, image_size=224, patch_size=14)),
}
CLIP_VOCAB_SIZE = 49408
RANDOM_SHAPES_VERSION = 1


def random_checkpoint_dir(shape: str) -> Path:
    """Folder of a randomly initialised CLIP with the shapes of `shape` (a key of REAL_SHAPES), built on first use."""
    if shape not in REAL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(REAL_SHAPES)}")
    tag = shape.replace("/", "-")
    target = cache_root() / f"random-clip-{tag}-v{RANDOM_SHAPES_VERSION}"
    if not (target / "model.safetensors").exists():
        build_random_checkpoint(target, shape)
    return target


def build_random_checkpoint(target: Path, shape: str) -> None:
    spec = REAL_SHAPES[shape]
    tokenizer = _byte_level_tokenizer()
    image_size = spec["vision"]["image_size"]
    config = CLIPConfig(
        text_config=dict(
            **spec["text"], vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(spec["vision"]),
        projection_dim=spec["projection_dim"],
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    save_seeded_checkpoint(target, CLIPModel, config, tokenizer, processor)


def save_seeded_checkpoint(target: Path, model_class: type, config, tokenizer, processor,
                           finish: Callable[[torch.nn.Module], None] | None = None) -> None:
    """`model_class(config)` initialised from seed 0 (`finish` sets what the init leaves unrealistic), saved
    with its tokenizer and image processor to `target`, atomically."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = model_class(config)
    finally:
        torch.random.set_rng_state(generator_state)
    if finish is not None:
        finish(model)
    # Same staging-then-rename as the tiny checkpoint: no half-written folder is ever visible.
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
