"""`python bench.py input` measures the old and new train paths and the test preparation, one JSON line each."""
from __future__ import annotations

import json
import os
import time

import pytest
from dataset_trees import build

from bench import cli
from bench.input_pipeline import GPU_MACHINE_WORKERS


def test_input_study_reports_each_path_per_worker_count_the_speedup_and_the_input_wait(capsys):
    started = time.perf_counter()
    cli.main(["input", "--backbone", "tiny", "--images", "8", "--size", "64x48", "--num_workers", "0", "1",
              "--batch_size", "4", "--repeats", "1", "--wait_steps", "3", "--step_ms", "5"])
    elapsed_ms = 1000 * (time.perf_counter() - started)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["pipeline"], r.get("num_workers")) for r in lines] == [
        ("decode_once", None), ("old", 0), ("new", 0), ("test", 0), ("old", 1), ("new", 1), ("test", 1),
        ("speedup", 0), ("speedup", 1), ("input_wait", 1)]
    rates = [r for r in lines if r["pipeline"] in ("decode_once", "old", "new", "test")]
    assert all(r["images_per_s"] > 0 for r in rates)
    assert [r["images"] for r in rates] == [8] * len(rates)
    assert [r["nproc"] for r in rates] == [os.cpu_count()] * len(rates)
    assert [r["source"] for r in lines] == ["synthetic 64x48 JPEG q90"] * len(lines)
    assert [r["image_size"] for r in lines] == [32] * len(lines)
    by = {(r["pipeline"], r.get("num_workers")): r for r in lines}
    assert by["speedup", 0]["new_over_old"] == pytest.approx(
        by["new", 0]["images_per_s"] / by["old", 0]["images_per_s"], rel=0.02)
    wait = by["input_wait", 1]
    assert wait["steps"] == 3
    assert wait["step_ms"] == 5
    assert 3 * wait["wait_ms_per_step"] < elapsed_ms  # the waits are part of the study's own time
    assert wait["wait_share_of_step"] == pytest.approx(wait["wait_ms_per_step"] / 5, abs=2e-3)
    # The projection from the 0-worker rate of the new path: 8 workers prepare a batch of 4 within a 5 ms step?
    per_core = by["new", 0]["images_per_s"]
    assert wait["new_images_per_s_per_core"] == per_core
    projected = max(0.0, 4 / (per_core * GPU_MACHINE_WORKERS) - 0.005) / 0.005
    assert wait["projected_wait_share_8_workers"] == pytest.approx(projected, rel=0.01, abs=2e-4)


def test_input_study_reads_a_datasets_test_split(tmp_path, capsys):
    build("dtd", tmp_path)
    cli.main(["input", "--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path),
              "--images", "4", "--num_workers", "0", "--batch_size", "2", "--repeats", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pipeline"] for r in lines] == ["decode_once", "old", "new", "test", "speedup", "input_wait"]
    assert all(r["source"] == "dtd test split" for r in lines)


@pytest.mark.parametrize("flag, value", [("--size", "64"), ("--num_workers", "-1"), ("--quality", "101"),
                                         ("--images", "0")])
def test_bad_input_flags_name_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.parse_input_args([flag, value])
    assert flag in capsys.readouterr().err


def test_a_missing_dataset_folder_is_an_error_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["input", "--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "--dataset dtd" in capsys.readouterr().err
