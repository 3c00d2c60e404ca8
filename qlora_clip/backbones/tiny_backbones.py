"""Offline checkpoints of the other families: tiny random SigLIP, SigLIP 2 and MetaCLIP 2, and random ones
in their base models' real shapes for the benchmark.

Like tiny_clip's, each is a real Hugging Face checkpoint folder (config, safetensors, tokenizer,
image processor) built once into the cache, so `--backbone tiny-siglip` goes through the same
`from_pretrained` code as `google/siglip-base-patch16-224`. The tiny ones share tiny_clip's shapes
(6 layers, every linear layer 64 wide for bitsandbytes' blocks, 32-pixel images in 8-pixel patches);
their tokenizers are of each family's own class and kind, built locally since the real ones cannot
be downloaded here, and differ from the real ones only in their vocabularies:

    tiny-siglip     SiglipTokenizer over a SentencePiece unigram model trained here on a few hundred
                    characters of prompts (SigLIP's: 32,000 pieces trained on WebLI); ids as SigLIP's
                    (pad = eos = '</s>' 1, unk 2), input ids only, as SigLIP was trained
    tiny-siglip2    GemmaTokenizer with one token per character and Gemma's 256 byte-fallback tokens
                    (Gemma's: 256,000 BPE pieces); EOS appended, padded on the right, no mask used
    tiny-metaclip2  XLMRobertaTokenizer (a Unigram model) with one piece per character, with and
                    without the word-start mark (MetaCLIP 2 worldwide's: 901,629 pieces)

The SigLIP ones start from SigLIP's initial temperature and bias (logit_scale ln 10, logit_bias -10),
the CLIP-like one at CLIP's ln 100, so the bias and the scale take part in the logits tests.
"""
from __future__ import annotations

import io
import math
import string
import tempfile
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    CLIPImageProcessor,
    GemmaTokenizer,
    MetaClip2Config,
    MetaClip2Model,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    XLMRobertaTokenizer,
)

from qlora_clip.machine import cache_root
from qlora_clip.backbones.tiny_clip import (
    CLIP_LOGIT_SCALE,
    TINY_IMAGE_SIZE,
    TINY_LAYERS,
    save_seeded_checkpoint,
    tiny_checkpoint_dir,
    tiny_checkpoint_path,
)

# Bump when a recipe below changes, so stale caches are rebuilt rather than reused.
TINY_BACKBONES_VERSION = 1
SIGLIP_TEXT_LENGTH = 64  # SigLIP's and SigLIP 2's fixed text length (their position tables)
CLIP_TEXT_LENGTH = 77
# SigLIP's initialisation (Zhai et al. 2023): t' = log 10, b = -10.
SIGLIP_LOGIT_SCALE = math.log(10)
SIGLIP_LOGIT_BIAS = -10.0
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]
TINY_TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=TINY_LAYERS, num_attention_heads=2)
TINY_VISION = dict(TINY_TOWER, image_size=TINY_IMAGE_SIZE, patch_size=8)
# What the tiny SentencePiece model is trained on: prompt words and every letter and digit, canonicalised
# as SiglipTokenizer canonicalises text (lowercase, no punctuation).
_WORDS = ("this is a photo of red green blue yellow cat dog t shirt top trouser pullover dress coat sandal "
          "shirt sneaker bag ankle boot texture satellite type food aircraft pet flower car action")
_CHARACTERS = sorted(set(string.ascii_letters + string.digits + string.punctuation))


def _siglip_tokenizer(folder: Path):
    """SiglipTokenizer over a SentencePiece unigram model trained on _WORDS (deterministic: one thread)."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    corpus = [_WORDS, " ".join(string.ascii_lowercase), " ".join(string.digits)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=64, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", character_coverage=1.0, num_threads=1, minloglevel=2)
    (folder / "spiece.model").write_bytes(model.getvalue())
    # SigLIP's hub configs list input ids only: the text tower was trained without a padding mask.
    return SiglipTokenizer(str(folder / "spiece.model"), model_max_length=SIGLIP_TEXT_LENGTH,
                           model_input_names=["input_ids"])


def _gemma_tokenizer() -> GemmaTokenizer:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)] + ["▁"] + _CHARACTERS
    return GemmaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], add_bos_token=False,
                          add_eos_token=True, padding_side="right", model_max_length=SIGLIP_TEXT_LENGTH)


def _xlm_roberta_tokenizer() -> XLMRobertaTokenizer:
    # XLM-R's ids: <s> 0, <pad> 1, </s> 2, <unk> 3; MetaCLIP 2 pools at the first </s>.
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(c, -2.0) for c in _CHARACTERS] + [("▁" + c, -1.0) for c in _CHARACTERS] + [("▁", -3.0)]
    return XLMRobertaTokenizer(vocab=pieces + [("<mask>", 0.0)], model_max_length=CLIP_TEXT_LENGTH)


def _siglip_start(model: torch.nn.Module) -> None:
    """SigLIP's initial temperature and bias (the random init leaves both at zero)."""
    with torch.no_grad():
        model.logit_scale.fill_(SIGLIP_LOGIT_SCALE)
        model.logit_bias.fill_(SIGLIP_LOGIT_BIAS)


def _siglip_processor(side: int) -> SiglipImageProcessor:
    return SiglipImageProcessor(size={"height": side, "width": side}, image_mean=SIGLIP_MEAN_STD,
                                image_std=SIGLIP_MEAN_STD, resample=3)


def _siglip_config(text: dict, vision: dict, tokenizer) -> SiglipConfig:
    return SiglipConfig(
        text_config=dict(text, max_position_embeddings=SIGLIP_TEXT_LENGTH, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None),
        vision_config=dict(vision))


def _metaclip2_config(text: dict, vision: dict, projection_dim: int, tokenizer) -> MetaClip2Config:
    return MetaClip2Config(
        text_config=dict(text, max_position_embeddings=CLIP_TEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(vision), projection_dim=projection_dim, logit_scale_init_value=CLIP_LOGIT_SCALE)


def build_siglip(target: Path, text: dict, vision: dict, vocab_size: int | None = None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # The SentencePiece model is written beside the checkpoint first; save_pretrained copies it in.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".spm-") as folder:
        tokenizer = _siglip_tokenizer(Path(folder))
        config = _siglip_config(dict(text, vocab_size=vocab_size or len(tokenizer)), vision, tokenizer)
        save_seeded_checkpoint(target, SiglipModel, config, tokenizer, _siglip_processor(vision["image_size"]),
                               finish=_siglip_start)


def build_siglip2(target: Path, text: dict, vision: dict, vocab_size: int | None = None) -> None:
    tokenizer = _gemma_tokenizer()
    config = _siglip_config(dict(text, vocab_size=vocab_size or len(tokenizer)), vision, tokenizer)
    save_seeded_checkpoint(target, SiglipModel, config, tokenizer, _siglip_processor(vision["image_size"]),
                           finish=_siglip_start)


def build_metaclip2(target: Path, text: dict, vision: dict, vocab_size: int | None = None,
                    projection_dim: int = 64) -> None:
    tokenizer = _xlm_roberta_tokenizer()
    config = _metaclip2_config(dict(text, vocab_size=vocab_size or len(tokenizer)), vision, projection_dim,
                               tokenizer)
    side = vision["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    save_seeded_checkpoint(target, MetaClip2Model, config, tokenizer, processor)


_TINY_BUILDS: dict[str, Callable[[Path, dict, dict], None]] = {
    "tiny-siglip": build_siglip, "tiny-siglip2": build_siglip2, "tiny-metaclip2": build_metaclip2}


def _built(target: Path, build: Callable[[Path], None]) -> Path:
    if not (target / "model.safetensors").exists():
        build(target)
    return target


def tiny_backbone_path(name: str) -> Path:
    """Where the tiny offline checkpoint `name` is (or will be) built, without building it."""
    return tiny_checkpoint_path() if name == "tiny" else cache_root() / f"{name}-v{TINY_BACKBONES_VERSION}"


def tiny_backbone_dir(name: str) -> Path:
    """The folder of a tiny offline checkpoint ('tiny' or a key of _TINY_BUILDS), built on first use."""
    if name == "tiny":
        return tiny_checkpoint_dir()
    build = _TINY_BUILDS[name]
    return _built(tiny_backbone_path(name), lambda t: build(t, TINY_TOWER, TINY_VISION))


TINY_NAMES = ("tiny", *_TINY_BUILDS)

# Random checkpoints in the real shapes of each family's base model, for the benchmark. Copied from the
# published configs: google/siglip-base-patch16-224 (transformers' SiglipConfig defaults are that
# checkpoint's: 768 wide, 12 layers and heads, MLP 3072, 64 text positions, 32,000 pieces, 224 px in
# 16-px patches) and google/siglip2-base-patch16-224 (the same towers; its config changes only the
# vocabulary, Gemma's 256,000 pieces). MetaCLIP 2 B/16's config was not available here: its shapes are
# assumed, OpenAI ViT-B/16's towers (vision 768 x 12, text 512 x 12 with 8 heads, projection 512)
# with the worldwide checkpoints' 901,629-piece XLM-V vocabulary, which dominates its weights.
_B16_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16)
_SIGLIP_B_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
_CLIP_B_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
FAMILY_SHAPES = {
    "SigLIP-B/16": (build_siglip, dict(text=_SIGLIP_B_TEXT, vision=_B16_VISION, vocab_size=32_000)),
    "SigLIP2-B/16": (build_siglip2, dict(text=_SIGLIP_B_TEXT, vision=_B16_VISION, vocab_size=256_000)),
    "MetaCLIP2-B/16": (build_metaclip2, dict(text=_CLIP_B_TEXT, vision=_B16_VISION, vocab_size=901_629,
                                             projection_dim=512)),
}


def random_family_checkpoint_dir(shape: str) -> Path:
    """Folder of a randomly initialised checkpoint in the shapes of `shape` (a key of FAMILY_SHAPES), built on
    first use. Its tokenizer is the tiny one over the real vocabulary's embedding table, as tiny_clip's are."""
    build, spec = FAMILY_SHAPES[shape]
    target = cache_root() / f"random-{shape.replace('/', '-')}-v{TINY_BACKBONES_VERSION}"
    return _built(target, lambda t: build(t, **spec))
