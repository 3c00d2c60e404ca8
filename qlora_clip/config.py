"""Typed settings of a run, one dataclass per part of the system, gathered in a RunSpec (spec.py).

run_utils.run_spec builds them once from the flags; below main() every function takes the part it
uses (the model loader a ModelConfig, the trainer and the sampler a TrainConfig, the data pipeline
a DataConfig, the extra evaluations an EvalConfig), so the benchmark and the tests build them
directly. Defaults are the published protocol's (paper.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qlora_clip import paper
from qlora_clip.methods.table import METHODS, Method, method_defaults


def cache_root() -> Path:
    """Where built checkpoints and preprocessed test images go: $QLORA_CLIP_CACHE or ~/.cache/qlora-clip."""
    return Path(os.environ.get("QLORA_CLIP_CACHE", Path.home() / ".cache" / "qlora-clip"))


@dataclass(frozen=True)
class AdapterConfig:
    """Which adapter method goes where, with what hyperparameters.

    `r`, `alpha`, `dropout` and `lora_scaling` left at None take the method's defaults (methods.py);
    one the method has no field for stays None. `peft_args` are further fields of the method's PEFT
    config (or its extras), already parsed and checked (peft_args.py). `total_steps` is the run's
    optimizer step count, which AdaLoRA's schedule needs.
    """
    mode: str = "lora"
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    encoder: str = "both"
    position: str = "all"
    params: tuple[str, ...] = ("q", "k", "v")
    lora_scaling: str | None = None  # 'rslora': alpha / sqrt(r), as CLIP-LoRA; 'standard': alpha / r
    peft_args: tuple[tuple[str, Any], ...] = ()
    total_steps: int | None = None

    def __post_init__(self) -> None:
        defaults = method_defaults(self.method)
        flags = {"r": "r", "alpha": "alpha", "dropout": "dropout_rate", "lora_scaling": "lora_scaling"}
        for name, flag in flags.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[flag])

    @property
    def method(self) -> Method:
        return METHODS[self.mode]

    @property
    def rslora(self) -> bool:
        return self.lora_scaling == "rslora"


@dataclass(frozen=True)
class ImageSettings:
    """What the vision tower expects, from the checkpoint's image processor (families.image_settings).

    Two test-time resizes exist among the families' processors: CLIP's (the shorter side to
    `resize_size`, then a centre crop of `image_size`) and SigLIP's (the whole image to
    `image_size` x `image_size`, no crop; `resize_size` is then `image_size`).
    """
    image_size: int   # side of the square the vision tower takes
    resize_size: int  # shorter side before the centre crop at test time
    mean: tuple[float, ...]
    std: tuple[float, ...]
    center_crop: bool = True  # False: resize to the square, no crop (SigLIP's processor)


@dataclass(frozen=True)
class TextSettings:
    """How class prompts become the text tower's input, by the checkpoint's family (families.py).

    `padding` 'longest' is only right where the tower is causal and pools at the end-of-text token
    (`pooled_at_end_of_text`: CLIP, MetaCLIP 2), so tokens after it cannot change the features;
    SigLIP pools the last position, so its prompts are padded to the fixed `max_length` it was
    trained with.
    """
    padding: str                 # 'longest' or 'max_length'
    max_length: int              # the text context: prompts are truncated to it ('max_length': padded to it)
    attention_mask: bool         # pass the padding mask (CLIP) or not (SigLIP was trained without one)
    lowercase: bool              # lowercase the prompts first (SigLIP 2 was trained on lowercased text)
    pooled_at_end_of_text: bool  # the text feature is the end-of-text token's (causal tower)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = paper.BACKBONE  # alias (families.ALIASES), hub id, local folder or a tiny offline checkpoint's name
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its batches: AdamW on the adapters, cosine schedule over n_iters x shots
    steps of batch_size images, each split into gradient_accumulation_steps micro-batches, on `loss`;
    `lr` is the method's (methods.py) unless --lr says otherwise."""
    shots: int
    seed: int = 1
    lr: float = paper.LR
    loraplus_lr_ratio: float | None = None  # LoRA+: B matrices train at this multiple of lr
    n_iters: int = paper.N_ITERS
    batch_size: int = paper.BATCH_SIZE
    gradient_accumulation_steps: int = 1
    loss: str = paper.LOSS  # paper.LOSSES: 'ce' (CLIP-LoRA's) or 'sigmoid' (SigLIP's, its families only)

    @property
    def total_steps(self) -> int:
        return self.n_iters * self.shots


@dataclass(frozen=True)
class DataConfig:
    """The few-shot draw and how its images are read."""
    dataset: str
    root_path: str
    shots: int
    seed: int = 1
    template: str = "clip-lora"
    protocol: str = "fewshot"
    num_workers: int | None = None  # None: loaders.default_num_workers for the device
    decode_budget_gb: float = 16.0


@dataclass(frozen=True)
class EvalConfig:
    """What a run evaluates besides training: other datasets' test sets, and where test images (and
    zero-shot accuracies) are cached."""
    eval_datasets: tuple[str, ...] = ()
    cache_dir: str | None = None  # None or '': no disk cache
    eval_only: bool = False       # evaluate a saved adapter, train nothing
    zero_shot_cache: bool = True  # reuse zero-shot accuracies stored under cache_dir (when there is one)

    @property
    def zero_shot_dir(self) -> Path | None:
        """The zero-shot store, beside the test images: None without a cache folder or with --no_zero_shot_cache."""
        return Path(self.cache_dir) / "zero-shot" if self.cache_dir and self.zero_shot_cache else None


@dataclass(frozen=True)
class OutputConfig:
    """Where a run writes: its results line, adapter, training states and merged export."""
    results_file: Path = Path("results/results.jsonl")
    save_path: Path | None = None
    checkpoint_dir: Path = Path("checkpoints")
    checkpoint_every: int = 0
    resume: bool = False
    merge_export: Path | None = None
    overwrite_export: bool = False  # --merge_export may replace an earlier export (never the base)
