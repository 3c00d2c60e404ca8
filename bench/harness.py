"""What every study needs: the machine, its matrix-multiply rate, syncs, memory release, a model.

Measurements share the machine with other jobs, so the matmul rate is taken around what it is
compared with, and freed memory is handed back to the OS before each setting so that its peak
starts from a clean baseline.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import time
from pathlib import Path

import torch

from qlora_clip.backbones.tiny_backbones import FAMILY_SHAPES, TINY_NAMES, random_family_checkpoint_dir, tiny_backbone_dir
from qlora_clip.backbones.tiny_clip import REAL_SHAPES, random_checkpoint_dir
from qlora_clip.machine import library_versions
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.table import METHODS
from qlora_clip.training.precision import Precision, resolve_precision
from qlora_clip.training.settings import TrainConfig

# What --backbone may name: a tiny offline checkpoint, or random weights in a base model's real shapes.
BACKBONES = (*TINY_NAMES, *REAL_SHAPES, *FAMILY_SHAPES)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def release_memory(device: torch.device) -> None:
    """Return freed memory to the OS so the next setting's peak RSS starts from a clean baseline."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "load_average_1_5_15min": os.getloadavg(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "versions": library_versions()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = f"{cpu_name()} ({torch.get_num_threads()} threads)"
    return info


def _matmul_seconds(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """Seconds per a @ b, averaged over `reps` back-to-back products."""
    sync(a.device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(a.device)
    return (time.perf_counter() - start) / reps


def gemm_rate(device: torch.device, dtype: torch.dtype) -> float:
    """A short matmul burst (FLOP/s): what the machine gives right now, taken around each setting
    because other jobs share this machine and move the available rate during the run."""
    n = 1024 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    return 2 * n ** 3 / _matmul_seconds(a, a, reps=3)


def gemm_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Best sustained torch.matmul rate (FLOP/s) on this machine now, over a few square sizes."""
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    reps = 4 if device.type == "cpu" else 20
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        seconds = min(_matmul_seconds(a, b, reps) for _ in range(3))
        best = max(best, 2 * n ** 3 / seconds)
    return best


def gemm_peaks(device: torch.device, dtypes: tuple[str, ...]) -> dict[str, float]:
    """gemm_peak_flops for each compute dtype name."""
    return {name: gemm_peak_flops(device, resolve_precision(name, device).dtype) for name in dtypes}


def checkpoint_dir(backbone: str) -> Path:
    """The offline checkpoint of a benchmark backbone (a BACKBONES name): a tiny one, or random weights in
    the real shapes of CLIP's (tiny_clip.REAL_SHAPES) or another family's base model (FAMILY_SHAPES)."""
    if backbone in TINY_NAMES:
        return tiny_backbone_dir(backbone)
    if backbone in FAMILY_SHAPES:
        return random_family_checkpoint_dir(backbone)
    return random_checkpoint_dir(backbone)


def load_model(backbone: str, dtype: str, device: torch.device, mode: str = "lora", encoder: str = "both",
               dropout: float | None = None, checkpointing: bool = False, total_steps: int = 1000
               ) -> tuple[AdapterConfig, Precision, Adapted]:
    """The adapted model exactly as main.py builds it (methods.interface.load_adapted), at the method's defaults
    (`dropout` None: the method's; `total_steps`: AdaLoRA's schedule)."""
    settings = AdapterConfig(mode=mode, encoder=encoder, dropout_rate=dropout, total_steps=total_steps)
    precision = resolve_precision(dtype, device)
    adapted = load_adapted(str(checkpoint_dir(backbone)), settings, device, precision.dtype, checkpointing)
    return settings, precision, adapted


def train_config(mode: str, total_steps: int) -> TrainConfig:
    """The method's optimisation as main.py runs it at its defaults: its learning rate (its parameter groups,
    LoRA+'s, are the method's own)."""
    return TrainConfig(shots=1, lr=METHODS[mode].defaults.lr, n_iters=total_steps)


def random_batch(batch: int, image_size: int, num_classes: int, device: torch.device,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking images and labels, the same for a given seed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    return images.to(device), labels.to(device)
