"""qlora_clip/training/distributed.py: two processes under accelerate launch train and evaluate as one does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_color_folder
from saved_weights import assert_same_adapters

import main
from qlora_clip.evaluation.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port no other test run on this machine holds (several suites may run at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_and_share_the_evaluation(tiny_argv, tmp_path):
    # 12 train images at batch 5: steps of 5, 5 and a short 2, and 5 images split 3 + 2 over the
    # two processes; each process's loss is divided by the step's 5 images, so the summed
    # gradient is the 1-process one.
    # The figures beyond the accuracy come from the processes' shares too: calibration sums added, each image's
    # logits and OOD scores gathered back into the test set's order.
    ood = make_color_folder(tmp_path / "ood", per_class=1, size=32, seed=3)
    run = tiny_argv("--shots", "3", "--batch_size", "5", "--n_iters", "2", "--lr", "1e-2", "--dropout_rate", "0",
                    "--device", "cpu", "--save_predictions", "--ood_datasets", str(ood), "--interpolate", "0.5")
    single = main.main([*run, "--save_path", str(tmp_path / "one")])
    single_predictions = read_predictions(single["predictions_file"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # accelerate's own CPU multi-process launcher needs MPI; its torchrun-based one (--multi_gpu)
    # starts the processes, and --device cpu makes them a gloo group.
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "main.py", *run, "--save_path", str(tmp_path / "two"), "--results_file", str(tmp_path / "two.jsonl")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "two.jsonl").read_text().splitlines()
    assert len(lines) == 1  # only the main process writes
    import json
    double = json.loads(lines[0])
    assert double["processes"] == 2
    assert single["total_steps"] == 6
    assert double["total_steps"] == 6
    assert single["train_images_seen"] == 5 + 5 + 2 + 5 + 5 + 2
    assert double["train_images_seen"] == single["train_images_seen"]
    assert_same_adapters(tmp_path / "one", tmp_path / "two", exact=False)
    assert double["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    # Each process encoded half of the 16 test images; the summed counts give the 1-process accuracy.
    assert single["test_images_per_process"] == [16]
    assert double["test_images_per_process"] == [8, 8]
    assert double["test_acc"] == single["test_acc"]
    assert double["zero_shot_acc"] == single["zero_shot_acc"]
    for name in ("test_ece", "test_nll", "test_brier", "zero_shot_ece"):
        assert double[name] == pytest.approx(single[name], rel=1e-5, abs=1e-9)
    assert double["reliability"]["test"]["bin_counts"] == single["reliability"]["test"]["bin_counts"]
    assert double["ood"][str(ood)] == pytest.approx(single["ood"][str(ood)], rel=1e-5)
    assert double["interpolation"][0]["test_acc"] == single["interpolation"][0]["test_acc"]
    predictions = read_predictions(double["predictions_file"])
    assert torch.equal(predictions.labels, single_predictions.labels)
    torch.testing.assert_close(predictions.test_logits, single_predictions.test_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predictions.zero_shot_logits, single_predictions.zero_shot_logits)
