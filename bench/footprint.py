"""What the weights cost: their footprint per mode and storage dtype, and dequantizing the 4-bit ones."""
from __future__ import annotations

import time

import bitsandbytes as bnb
import torch

from bench.harness import load_model, release_memory, sync
from bench.settings import BenchSettings
from qlora_clip.training.memory import MB

# (mode, dtype) pairs whose footprints the report lists; the footprint ratios need the first four.
FOOTPRINTS = (("lora", "fp32"), ("lora", "fp16"), ("qlora", "fp32"), ("qlora", "fp16"), ("qdora", "fp32"))


def footprints(backbone: str, device: torch.device) -> dict[str, float]:
    """get_memory_footprint() (MB) of the adapted model, as main.py records it, per FOOTPRINTS pair."""
    out = {}
    for mode, dtype in FOOTPRINTS:
        _, _, adapted = load_model(backbone, dtype, device, mode)
        out[f"{mode}_{dtype}"] = adapted.footprint_bytes() / MB
        del adapted
        release_memory(device)
    return out


def dequant_seconds(backbone: str, dtype: str, device: torch.device) -> dict:
    """Time to dequantize every 4-bit weight once, best of 3; a QLoRA step does it once forward,
    once backward (and once more in the recomputation when checkpointing)."""
    _, _, adapted = load_model(backbone, dtype, device, "qlora")
    layers = [m for m in adapted.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for layer in layers:
            bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        sync(device)
        times.append(time.perf_counter() - start)
    count = len(layers)
    del adapted, layers  # the layers hold the 4-bit weights too: drop both before releasing the memory
    release_memory(device)
    return {"layers": count, "all_layers_once_s": min(times)}


def run_dequant(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """The dequantization study at the first compute dtype; it adds no step-time rows."""
    return dequant_seconds(bench.backbone, bench.compute_dtypes[0], torch.device(bench.device)), []
