"""The tiny CLIP with adapters that change its features, for tests that compare two ways of encoding."""
from __future__ import annotations

import torch

from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_run

CPU = torch.device("cpu")


def tiny_with_nonzero_adapters(mode: str = "lora", scale: float = 0.5, *flags: str) -> Adapted:
    """The tiny model with `mode` adapters on both towers, every LoRA B drawn at `scale` (seeded): B starts at
    zero, which would make the text adapters change nothing."""
    spec = parse_run(["--backbone", "tiny", "--mode", mode, "--encoder", "both", "--device", "cpu", *flags])
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, resolve_precision("fp32", CPU).dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in adapted.model.named_parameters():
            if "lora_B" in name:
                param.copy_(scale * torch.randn(param.shape, generator=g))
    return adapted
