"""LoftQ (Li et al., ICLR 2024) for the 4-bit base: LoRA whose A, B start as the rank-r SVD of
(W - dequant(NF4(W))) / s, so that the adapted layer starts at W up to the rank-r error, not at the
quantized W.

PEFT's `replace_lora_weights_loftq` computes exactly this (one LoftQ step) but moves the weights to
CUDA unconditionally (peft 0.21); `initialize` is the same computation on the weights' own device,
with the LoRA scale s divided out so that s B A equals the residual whatever alpha and r are.
"""
from __future__ import annotations

import math
import os

import torch

from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.methods.peft_tuners import PEFT_PREFIX, PeftAdapter
from qlora_clip.methods.settings import AdapterConfig


class LoftQ(PeftAdapter):
    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> LoftQ:
        adapted = super().attach(bundle, settings)
        loftq_initialize(adapted.model, bundle.checkpoint.source)
        return adapted


def loftq_initialize(model: torch.nn.Module, source: str) -> None:
    """A, B of every 4-bit LoRA layer from the SVD of the original weight's quantization residual."""
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit
    from peft.utils.loftq_utils import _low_rank_decomposition, _SafetensorLoader

    loader = _SafetensorLoader(model, _local_checkpoint(source))
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit):
                continue
            weight = loader.get_tensor(name.removeprefix(PEFT_PREFIX) + ".weight").float()
            quantized = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            out = _low_rank_decomposition((weight.to(quantized.device) - quantized), reduced_rank=module.r["default"])
            root = math.sqrt(module.scaling["default"])
            lora_a, lora_b = module.lora_A["default"].weight, module.lora_B["default"].weight
            lora_a.data = (out["R"] / root).to(lora_a.dtype)
            lora_b.data = (out["L"] / root).to(lora_b.dtype)


def _local_checkpoint(source: str) -> str:
    if os.path.isdir(source):
        return source
    from huggingface_hub import snapshot_download

    return snapshot_download(source, local_files_only=True)
