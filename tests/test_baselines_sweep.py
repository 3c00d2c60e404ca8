"""run_baselines.sh: every baseline over the grid, through sweep.py (in --dry-run)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from qlora_clip.methods.table import BASELINE_MODES

REPO = Path(__file__).resolve().parents[1]


def planned_modes(tmp_path: Path, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATASETS", "SHOTS", "SEEDS", "EXTRA_ARGS", "BASELINES")}
    proc = subprocess.run([str(REPO / "run_baselines.sh"), "--dry-run"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**clean, "RESULTS_FILE": str(tmp_path / "r.jsonl"), "DATASETS": "dtd", "SHOTS": "1",
                               "SEEDS": "1", **env})
    assert proc.returncode == 0, proc.stderr
    return [line.split("--mode ")[1].split()[0] for line in proc.stdout.splitlines() if "main.py --mode" in line]


def test_run_baselines_runs_the_tables_baselines_by_default(tmp_path):
    assert planned_modes(tmp_path) == list(BASELINE_MODES)


def test_run_baselines_plans_each_baseline_over_the_grid_without_saving(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("DATASETS", "SHOTS", "SEEDS", "EXTRA_ARGS")}
    proc = subprocess.run([str(REPO / "run_baselines.sh"), "--dry-run"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**clean, "RESULTS_FILE": str(tmp_path / "r.jsonl"), "DATASETS": "dtd eurosat",
                               "SHOTS": "1 16", "BASELINES": "tip_adapter coop",
                               "SAVE_PATH": str(tmp_path / "adapters")})
    assert proc.returncode == 0, proc.stderr
    commands = [line.strip() for line in proc.stdout.splitlines() if "main.py --mode" in line]
    assert len(commands) == 2 * 2 * 2 * 3  # baselines x datasets x shots x seeds
    assert [c.split("--mode ")[1].split()[0] for c in commands[::12]] == ["tip_adapter", "coop"]
    assert not any("--save_path" in c for c in commands)
