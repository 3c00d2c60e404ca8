"""main.py as a command: a bad input is one line on stderr and exit status 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_prints_error_and_exits_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "main.py", "--dataset", "folder", "--root_path", str(tmp_path / "missing"),
                           "--backbone", "tiny", "--results_file", str(tmp_path / "r.jsonl")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: --dataset folder: --root_path" in proc.stderr
    assert "Traceback" not in proc.stderr
