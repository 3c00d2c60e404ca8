"""Numeric precision, decided once per run so the training loop never branches on it."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 has the narrow exponent range that needs loss scaling.
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def resolve_precision(compute_dtype: str, device: torch.device) -> Precision:
    """`auto` is CLIP-LoRA's fp16 autocast on CUDA and fp32 on the CPU, where half types are slow."""
    if compute_dtype == "auto":
        compute_dtype = "fp16" if device.type == "cuda" else "fp32"
    return Precision(device=device, dtype=DTYPES[compute_dtype])
