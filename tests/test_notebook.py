"""notebooks/quickstart.ipynb executes end to end, headless, on the tiny model (DEMO_N_ITERS=1)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def copy_working_tree(dest: Path) -> Path:
    """The notebook writes results/ and logs/ under the repository: run it in a copy."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)  # keeps the run_*.sh scripts executable
    return dest


def outputs(cell: dict, kind: str) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and kind == "stream":
            texts.append(output["text"])
        elif kind in output.get("data", {}):
            texts.append(output["data"][kind])
    return "".join(texts)


@pytest.mark.skipif(not (REPO / "run_demo.sh").exists(), reason="run_demo.sh (the demo the notebook runs) is missing")
def test_quickstart_notebook_runs_end_to_end(tmp_path, monkeypatch):
    repo = copy_working_tree(tmp_path / "repo")
    # No pip or apt inside a test: the machine is set up; fake installers on PATH prove nothing calls them.
    monkeypatch.setenv("SKIP_SETUP", "1")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("pip", "pip3", "apt-get", "apt"):
        (fake_bin / tool).write_text(f"#!/bin/sh\necho '{tool} called' >> {tmp_path / 'installers.log'}\nexit 1\n")
        (fake_bin / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("DEMO_N_ITERS", "1")
    monkeypatch.setenv("DEMO_MODES", "qlora")  # one method keeps the test short: each run evaluates 10,000 images twice
    monkeypatch.setenv("DEMO_BASELINES", "")  # the baselines' demo rows are tests/test_baselines_run.py's
    for name in ("DEMO_RESULTS", "RUN_REAL", "DATASETS", "SHOTS", "SEEDS", "BACKBONE", "EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(repo / "notebooks" / "quickstart.ipynb", as_version=4)

    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(repo / "notebooks")}}).execute()

    # Every repository file the notebook's text names is where it says.
    named = {m for cell in notebook.cells if cell.cell_type == "markdown"
             for m in re.findall(r"`([\w./-]+\.(?:md|sh|py|ipynb))`", cell.source)}
    assert "DATASETS.md" in named
    assert [n for n in named if not (repo / n).exists()] == []

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "setup skipped (SKIP_SETUP=1)" in outputs(code[0], "stream")
    assert "ready in" in outputs(code[0], "stream")
    assert "setup.sh" not in outputs(code[1], "stream")
    assert not (tmp_path / "installers.log").exists()
    table = outputs(code[2], "text/markdown")
    assert "| Method | Shots |" in table
    assert "| Dataset | Shots | Method | Training time |" in table
    assert "image/png" in code[2].outputs[-1]["data"]
    # The real-run cells did not train: without RUN_REAL they list the sweep they would run.
    listing = outputs(code[4], "stream")
    assert listing.count("todo  qlora caltech101") == 15
    [demo] = [json.loads(line) for line in (repo / "results" / "demo.jsonl").read_text().splitlines()]
    assert demo["mode"] == "qlora"
    assert demo["dataset"] == "fashion_mnist"
    assert demo["total_steps"] == 16  # 1 x 16 shots
    assert not (repo / "results" / "results.jsonl").exists()
