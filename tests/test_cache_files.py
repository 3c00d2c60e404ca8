"""qlora_clip/cache_files.py: one atomic write and one clean-up rule for every cache (test images, frozen features,
zero-shot accuracies): what a killed writer left is removed by the next write into the folder; a live writer's file,
or a recent one of another machine, is left alone."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qlora_clip import cache_files
from qlora_clip.evaluation import feature_cache, zero_shot_cache
from qlora_clip.inputs import test_images

# Above Linux's largest pid (PID_MAX_LIMIT, 2**22): no process has it, as if its writer had been killed.
DEAD_PID = 2 ** 22 + 1


def write_test_images(folder: Path) -> Path:
    path = folder / "mini-123.u8"
    test_images.write_cache(path, {"k": 1}, torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    return path


def write_features(folder: Path) -> Path:
    path = feature_cache.cache_path(folder, "mini-test", {"k": 1})
    feature_cache.write(path, {"k": 1}, torch.ones(2, 8))
    return path


def write_zero_shot(folder: Path) -> Path:
    zero_shot_cache.write(folder, {"k": 1}, 50.0)
    return zero_shot_cache.entry_path(folder, {"k": 1})


WRITERS = {"test images": write_test_images, "features": write_features, "zero-shot store": write_zero_shot}


def leftover(folder: Path, entry: str, host: str, pid: int, age_hours: float = 0) -> Path:
    path = folder / f".{entry}.tmp-{host}-{pid}-x1y2z3{int(age_hours)}"
    path.write_bytes(b"\0" * 100)
    when = time.time() - age_hours * 3600
    os.utime(path, (when, when))
    return path


@pytest.mark.parametrize("writer", WRITERS)
def test_every_cache_write_removes_what_killed_writers_left(writer, tmp_path):
    with pytest.raises(ProcessLookupError):
        os.kill(DEAD_PID, 0)
    folder = tmp_path / "cache"
    folder.mkdir()
    host = socket.gethostname()
    entry = WRITERS[writer](tmp_path / "probe").name  # the entry's name, written elsewhere first
    killed = leftover(folder, entry, host, DEAD_PID)
    killed_other_entry = leftover(folder, "an-entry-never-written-again.f32", host, DEAD_PID)
    live = leftover(folder, entry, host, os.getpid())
    remote = leftover(folder, entry, "another-machine", 1)
    remote_old = leftover(folder, entry, "another-machine", 1, age_hours=7)
    old_naming = folder / f".{entry}.k9q2"
    old_naming.write_bytes(b"\0")
    os.utime(old_naming, (time.time() - 7 * 3600,) * 2)

    written = WRITERS[writer](folder)

    assert written.is_file()
    left = {path.name for path in folder.iterdir()}
    assert left == {written.name, live.name, remote.name}
    for gone in (killed, killed_other_entry, remote_old, old_naming):
        assert not gone.exists()


def test_a_failed_write_leaves_neither_a_temporary_nor_an_entry(tmp_path):
    path = tmp_path / "entry.f32"
    with pytest.raises(RuntimeError):
        with cache_files.atomic_file(path) as f:
            f.write(b"half")
            raise RuntimeError("killed politely")
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_names_this_machine_and_process(tmp_path):
    path = tmp_path / "entry.u8"
    with cache_files.atomic_file(path) as f:
        [temporary] = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert temporary.name.startswith(f".entry.u8.tmp-{socket.gethostname()}-{os.getpid()}-")
        f.write(b"data")
    assert path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.u8"]


def test_the_headed_layout_still_reads_back(tmp_path):
    path = write_features(tmp_path)
    assert np.array_equal(feature_cache.load(path, {"k": 1}).numpy(), np.ones((2, 8), dtype=np.float32))
