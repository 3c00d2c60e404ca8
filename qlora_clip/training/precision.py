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


def allow_tf32(device: torch.device) -> None:
    """On CUDA, let fp32 matrix multiplies and convolutions use TF32 tensor cores (Ampere and later).

    It matters for --compute_dtype fp32 and for the few fp32 operations of an autocast step (the
    logits, the loss). TF32 keeps fp32's range with a 10-bit mantissa: ample for a frozen base and
    a rank-2 adapter, and several times the fp32 matmul throughput. No effect on the CPU.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
