"""qlora_clip/training/memory.py on the CPU: PeakMemory resets the resident set's peak, measures blocks, reads
results fields.

The logic (what reset, read and measure do with the kernel's peak) is tested against a fake kernel whose
resident set the test sets, so no number depends on what else the machine is doing. Two tests use the real
kernel, with bounds that hold under any load: the fields read, and that the reset reaches Linux.
"""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
import torch

from qlora_clip.training import memory as memory_module
from qlora_clip.run import schema
from qlora_clip.training.memory import PeakMemory

CPU = torch.device("cpu")
CLEAR_REFS, STATUS = "/proc/self/clear_refs", "/proc/self/status"


class FakeKernel:
    """The two /proc files PeakMemory uses, for a process whose resident set the test moves: VmHWM is the
    highest VmRSS since the last reset, and writing 5 to clear_refs resets it to VmRSS now, as Linux does."""

    def __init__(self, resident_mb: float = 1000.0, resettable: bool = True):
        self.resident_mb = self.peak_mb = resident_mb
        self.resettable = resettable

    def allocate(self, mb: float) -> None:
        self.resident_mb += mb
        self.peak_mb = max(self.peak_mb, self.resident_mb)

    def free(self, mb: float) -> None:
        self.resident_mb -= mb

    def touch(self, mb: float) -> None:
        """A buffer written in full, then freed: the resident set is back, its peak is not."""
        self.allocate(mb)
        self.free(mb)

    def path(self, name: str) -> FakeFile:
        return FakeFile(self, str(name))


class FakeFile:
    def __init__(self, kernel: FakeKernel, name: str):
        self.kernel, self.name = kernel, name

    def write_text(self, text: str) -> None:
        if self.name != CLEAR_REFS or not self.kernel.resettable:
            raise PermissionError(f"{self.name}: not writable")
        if text == "5":
            self.kernel.peak_mb = self.kernel.resident_mb

    def read_text(self) -> str:
        assert self.name == STATUS, self.name
        return (f"Name:\tpython3\nVmPeak:\t 9999999 kB\nVmHWM:\t {round(self.kernel.peak_mb * 1024)} kB\n"
                f"VmRSS:\t {round(self.kernel.resident_mb * 1024)} kB\n")


@pytest.fixture
def kernel(monkeypatch) -> FakeKernel:
    fake = FakeKernel()
    monkeypatch.setattr(memory_module, "Path", fake.path)
    return fake


def test_reset_starts_the_peak_again_from_the_resident_set_now(kernel):
    memory = PeakMemory(CPU)
    memory.reset()
    kernel.touch(200)
    assert memory.read()["peak_memory_mb"] == 1200  # read() without a reset keeps the freed buffer's peak
    kernel.free(300)  # e.g. another thread let go of memory
    memory.reset()
    assert memory.read() == {"peak_memory_mb": 700, "memory_kind": "cpu_rss", "peak_memory_reserved_mb": None}


def test_measure_keeps_the_highest_block_and_counts_nothing_between_blocks(kernel):
    memory = PeakMemory(CPU)
    with memory.measure():
        kernel.touch(200)
    first = memory.read()
    assert first["peak_memory_mb"] == 1200
    with memory.measure():
        pass  # a lower peak does not replace the first block's
    assert memory.read() == first
    kernel.touch(400)  # outside any block: not measured
    with memory.measure():
        pass
    assert memory.read() == first
    with memory.measure():
        kernel.touch(400)  # a higher block replaces it
    assert memory.read() == {**first, "peak_memory_mb": 1400}
    assert memory.read(prefix="eval_")["eval_peak_memory_mb"] == 1400


def test_a_peak_that_cannot_be_reset_is_called_the_process_lifetime_peak(monkeypatch):
    kernel = FakeKernel(resettable=False)  # clear_refs not writable (not Linux, or a locked-down container)
    monkeypatch.setattr(memory_module, "Path", kernel.path)
    memory = PeakMemory(CPU)
    kernel.touch(200)
    memory.reset()
    assert memory.read() == {"peak_memory_mb": 1200, "memory_kind": "cpu_rss_process_lifetime",
                             "peak_memory_reserved_mb": None}


# --- the real kernel ------------------------------------------------------------------------------

def status_mb(field: str) -> float:
    line = next(line for line in Path(STATUS).read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def test_read_gives_the_results_fields_with_and_without_a_prefix_and_no_reserved_peak_on_the_cpu():
    memory = PeakMemory(CPU)
    memory.reset()
    resident = status_mb("VmRSS")
    plain, prefixed = memory.read(), memory.read(prefix="eval_")
    assert set(plain) == {"peak_memory_mb", "memory_kind", "peak_memory_reserved_mb"}
    assert set(plain) | set(prefixed) <= set(schema.FIELDS)  # every name is a declared results field
    assert plain["memory_kind"] == "cpu_rss"
    assert prefixed["eval_memory_kind"] == "cpu_rss"
    assert prefixed["eval_peak_memory_reserved_mb"] is None
    assert plain["peak_memory_reserved_mb"] is None
    # The peak since the reset, read later: at least the resident set in between, at most the lifetime peak.
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert plain["peak_memory_mb"] >= resident - 1
    assert prefixed["eval_peak_memory_mb"] >= plain["peak_memory_mb"]  # read later: never lower
    assert prefixed["eval_peak_memory_mb"] <= lifetime_mb + 1


def test_the_reset_reaches_linux():
    buffer = np.ones(200 * 2**20 // 8)  # written in full: resident until freed
    assert buffer[-1] == 1.0
    del buffer
    peak, resident = status_mb("VmHWM"), status_mb("VmRSS")
    gap = peak - resident
    if gap < 20:  # the kernel kept the buffer out of the resident set (memory pressure): nothing to see
        pytest.skip(f"the peak is only {gap:.0f} MB above the resident set")
    PeakMemory(CPU).reset()
    # Back near the resident set: other threads may allocate a little in between, never half the buffer.
    assert PeakMemory(CPU).read()["peak_memory_mb"] < peak - gap / 2
