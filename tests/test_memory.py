"""qlora_clip/memory.py on the CPU: PeakMemory resets the resident set's peak, measures blocks, reads results fields.

Each test allocates and frees a buffer of BLOCK_MB (numpy maps large buffers and unmaps them when freed,
so the resident set grows and shrinks by about that much) and compares peaks in whole tens of megabytes.
"""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import torch

from qlora_clip.run import schema
from qlora_clip.training.memory import PeakMemory

CPU = torch.device("cpu")
BLOCK_MB = 200


def touch(megabytes: int) -> None:
    """Raise the resident set by `megabytes` for a moment: a buffer written in full, then freed."""
    buffer = np.ones(megabytes * 2**20 // 8)
    assert buffer[-1] == 1.0
    del buffer


def resident_mb() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_read_gives_the_results_fields_with_and_without_a_prefix_and_no_reserved_peak_on_the_cpu():
    memory = PeakMemory(CPU)
    memory.reset()
    plain, prefixed = memory.read(), memory.read(prefix="eval_")
    assert set(plain) == {"peak_memory_mb", "memory_kind", "peak_memory_reserved_mb"}
    assert set(plain) | set(prefixed) <= set(schema.FIELDS)  # every name is a declared results field
    assert prefixed["eval_memory_kind"] == plain["memory_kind"] == "cpu_rss"
    assert prefixed["eval_peak_memory_reserved_mb"] is None and plain["peak_memory_reserved_mb"] is None
    # The resident set's peak since the reset: at least what is resident now, at most the process's lifetime peak.
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert resident_mb() - 1 <= plain["peak_memory_mb"] <= lifetime_mb + 1
    assert abs(prefixed["eval_peak_memory_mb"] - plain["peak_memory_mb"]) < 10


def test_reset_starts_the_peak_again_from_the_resident_set_now():
    memory = PeakMemory(CPU)
    memory.reset()
    # Resident now, not the peak since the reset: other threads may have freed memory in between.
    before = resident_mb()
    touch(BLOCK_MB)
    high = memory.read()["peak_memory_mb"]
    assert high >= before + 0.9 * BLOCK_MB  # read() without a reset keeps the freed buffer's peak
    memory.reset()
    low = memory.read()["peak_memory_mb"]
    assert low <= high - 0.9 * BLOCK_MB and abs(low - resident_mb()) < 10


def test_measure_keeps_the_highest_block_and_counts_nothing_between_blocks():
    memory = PeakMemory(CPU)
    with memory.measure():
        touch(BLOCK_MB)
    first = memory.read()
    with memory.measure():
        pass  # a lower peak does not replace the first block's
    assert memory.read() == first
    touch(2 * BLOCK_MB)  # outside any block: not measured
    with memory.measure():
        pass
    assert memory.read() == first
    before = resident_mb()
    with memory.measure():
        touch(2 * BLOCK_MB)  # a higher block replaces it
    assert memory.read() != first and memory.read()["peak_memory_mb"] >= before + 1.8 * BLOCK_MB
    assert memory.read()["memory_kind"] == "cpu_rss"
