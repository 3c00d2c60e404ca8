"""The model flags of a run: which checkpoint, and whether its activations are recomputed in backward."""
from __future__ import annotations

from dataclasses import dataclass

from qlora_clip import paper
from qlora_clip.backbones.families import TINY_BACKBONES, aliases_help
from qlora_clip.flags import RUN, flag


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = flag(paper.BACKBONE, f"an alias ({aliases_help()}), any Hugging Face hub id or local checkpoint "
                         "folder of a CLIP, SigLIP, fixed-resolution SigLIP 2 or MetaCLIP 2 model, or a small random "
                         f"checkpoint built offline: {', '.join(TINY_BACKBONES)}", group="model")
    # Gradient checkpointing recomputes the same activations (PyTorch restores the dropout RNG): it decides the
    # run's memory and time, not the adapter it trains.
    gradient_checkpointing: bool = flag(False, "recompute encoder activations in backward to save memory",
                                        group="training", role=RUN)
