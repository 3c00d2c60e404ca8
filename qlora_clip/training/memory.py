"""Peak memory of a part of a run: CUDA allocator statistics on a GPU, resident set size on the CPU."""
from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Iterator

import torch

MB = 1024 * 1024


class PeakMemory:
    """Reset before the part to measure, read after it; or `measure()` several parts, keep the highest."""

    def __init__(self, device: torch.device):
        self.device = device
        self._rss_resettable = True
        self._highest: dict | None = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Measure the block; read() then gives the highest peak over every measured block."""
        self.reset()
        yield
        peak = self._read_now()
        if self._highest is None or peak["peak_memory_mb"] > self._highest["peak_memory_mb"]:
            self._highest = peak

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS.
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._rss_resettable = False

    def read(self, prefix: str = "") -> dict:
        """{peak_memory_mb, memory_kind, peak_memory_reserved_mb (None on the CPU)}, each key with `prefix`,
        since the last reset (or the highest of measure()); the names are results fields (schema.py)."""
        peak = self._highest if self._highest is not None else self._read_now()
        return {prefix + key: value for key, value in peak.items()}

    def _read_now(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {
                "memory_kind": "cuda_allocated",
                "peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / MB,
                "peak_memory_reserved_mb": torch.cuda.max_memory_reserved(self.device) / MB,
            }
        return {"memory_kind": "cpu_rss" if self._rss_resettable else "cpu_rss_process_lifetime",
                "peak_memory_mb": _peak_rss_mb(), "peak_memory_reserved_mb": None}


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
