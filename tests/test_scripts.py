"""The protocol sweep scripts run_base2new.sh and run_cross_dataset.sh, in --dry-run."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(script: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATASETS", "SHOTS", "SEEDS", "LOG_DIR", "EXTRA_ARGS", "TARGETS", "MODE")}
    return subprocess.run([str(REPO / script), *args, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "RESULTS_FILE": str(tmp_path / "r.jsonl"), **env}, timeout=120)


def planned(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines() if "main.py --mode" in line]


def test_run_base2new_sweeps_16_shots_seeds_1_to_3_under_the_protocol(tmp_path):
    proc = dry_run("run_base2new.sh", tmp_path, "qdora", DATASETS="dtd eurosat", EXTRA_ARGS="--n_iters 2")
    commands = planned(proc)
    assert len(commands) == 2 * 3
    assert all("--mode qdora" in c and "--shots 16" in c and "--protocol base2new --n_iters 2" in c for c in commands)
    assert {c.split("--seed ")[1].split()[0] for c in commands} == {"1", "2", "3"}
    assert "log logs/ViT-B-16/dtd/base2new/16shots/seed1/qdora-n_iters2-" in proc.stdout


def test_run_cross_dataset_trains_on_imagenet_and_evaluates_the_14_targets(tmp_path):
    commands = planned(dry_run("run_cross_dataset.sh", tmp_path, "lora"))
    assert len(commands) == 3
    assert all("--dataset imagenet --shots 16" in c for c in commands)
    targets = commands[0].split("--eval_datasets ")[1].split()
    assert len(targets) == 14
    assert "imagenet" not in targets
    assert targets[-4:] == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def test_protocol_scripts_need_a_mode(tmp_path):
    for script in ("run_base2new.sh", "run_cross_dataset.sh"):
        proc = subprocess.run([str(REPO / script)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert "usage:" in proc.stderr
        assert "METHOD" in proc.stderr
