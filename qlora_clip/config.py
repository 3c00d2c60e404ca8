"""Typed settings of a run, built once from the flags (run_utils.run_config), passed down by part.

The model loader gets a ModelConfig, the trainer a TrainConfig, the data pipeline a DataConfig;
none of them sees the argparse Namespace, so the benchmark and the tests build these directly.
Defaults are the published protocol's (protocol.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qlora_clip import paper
from qlora_clip.methods import METHODS, Method


def cache_root() -> Path:
    """Where built checkpoints and preprocessed test images go: $QLORA_CLIP_CACHE or ~/.cache/qlora-clip."""
    return Path(os.environ.get("QLORA_CLIP_CACHE", Path.home() / ".cache" / "qlora-clip"))


@dataclass(frozen=True)
class AdapterConfig:
    """Which PEFT adapter goes where: method, rank, scale, dropout and the modules it adapts."""
    mode: str = "lora"
    r: int = paper.RANK
    alpha: float = paper.ALPHA
    dropout: float = paper.DROPOUT
    encoder: str = "both"
    position: str = "all"
    params: tuple[str, ...] = ("q", "k", "v")
    rslora: bool = True  # scale alpha / sqrt(r), as CLIP-LoRA; False: alpha / r

    @property
    def method(self) -> Method:
        return METHODS[self.mode]


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = paper.BACKBONE  # paper alias, hub id, local folder or 'tiny'
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: AdamW on the adapters, cosine schedule over n_iters x shots steps."""
    shots: int
    seed: int = 1
    lr: float = paper.LR
    n_iters: int = paper.N_ITERS
    batch_size: int = paper.BATCH_SIZE
    gradient_accumulation_steps: int = 1

    @property
    def total_steps(self) -> int:
        return self.n_iters * self.shots


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    root_path: str
    shots: int
    seed: int = 1
    template: str = "clip-lora"
    num_workers: int = 0


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
