"""sweep.py --modes: several methods under one protocol (same draw, same grid), and run_methods.sh."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qlora_clip.methods.table import ADAPTER_MODES, BASELINE_MODES, FULL_PRECISION_MODES
from sweep import parse_args
from sweeps.plan import plan_runs

REPO = Path(__file__).resolve().parents[1]


def planned(*argv: str) -> list:
    return plan_runs(parse_args(["--datasets", "dtd", "--shots", "2", "--seeds", "1", "2", "--backbone", "tiny",
                                 *argv]))


def test_modes_sweep_each_method_over_the_same_grid(tmp_path):
    runs = planned("--modes", "lora", "vera", "ia3-4bit", "--results_file", str(tmp_path / "r.jsonl"))
    assert [(r.spec.method, r.spec.seed) for r in runs] == [
        ("lora", 1), ("lora", 2), ("vera", 1), ("vera", 2), ("ia3-4bit", 1), ("ia3-4bit", 2)]
    # one few-shot draw per seed, shared by every method
    assert len({r.spec.subset_path for r in runs}) == 2
    assert runs[2].spec.train.lr == 1e-3
    assert runs[2].spec.variant == "vera"  # each method at its own defaults
    assert all("--run_group r-methods-tiny" in r.command for r in runs)
    assert parse_args(["--mode", "dora"]).modes == ["dora"]
    assert parse_args([]).modes == ["qlora"]


def test_modes_groups_expand_and_mistakes_name_the_flag(capsys):
    assert parse_args(["--modes", "all"]).modes == list(ADAPTER_MODES)
    assert parse_args(["--modes", "baselines", "lora"]).modes == [*BASELINE_MODES, "lora"]
    assert parse_args(["--modes", "full-precision", "qlora"]).modes == [*FULL_PRECISION_MODES, "qlora"]
    assert parse_args(["--modes", "lora,vera"]).modes == ["lora", "vera"]
    assert parse_args(["--modes", "leaders"]).modes == ["clip_svd", "2sfs", "proker", "clap"]
    assert parse_args(["--modes", "prompts"]).modes == ["cocoop", "kgcoop", "maple", "promptsrc"]
    for argv, message in ((["--modes", "lorra"], "unknown method(s) lorra"),
                          (["--mode", "lora", "--modes", "vera"], "--mode and --modes")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err


def test_run_methods_sh_sweeps_every_method_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATASETS", "SHOTS", "SEEDS", "MODES", "MODE")}
    proc = subprocess.run([str(REPO / "run_methods.sh"), "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "RESULTS_FILE": str(tmp_path / "r.jsonl"), "DATASETS": "dtd", "SHOTS": "1",
                               "SEEDS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if "main.py --mode" in line]
    methods = [c.split("--mode ")[1].split()[0] for c in commands]
    assert methods == [*FULL_PRECISION_MODES, "qlora", "qdora", "loftq"]
