"""summarize.py on a synthetic results file written the way main.py writes it."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from qlora_clip.results import append_jsonl
from run_utils import build_parser
from summarize import main as summarize_main

REPO = Path(__file__).resolve().parents[1]

# accuracy by (mode, dataset, shots) -> one value per seed 1, 2, 3
ACCURACY = {
    ("lora", "caltech101", 1): (90.0, 91.0, 92.0),
    ("lora", "dtd", 1): (50.0, 52.0, 54.0),
    ("qlora", "caltech101", 1): (91.0, 91.0, 91.0),
    ("qlora", "dtd", 1): (51.0, 53.0, 55.0),
    ("qlora", "caltech101", 4): (94.0, 95.0, 96.0),
    ("qlora", "dtd", 4): (60.0, 62.0, None),  # seed 3 never finished
}
ZERO_SHOT = {"caltech101": 88.0, "dtd": 40.0}


def record(mode: str, dataset: str, shots: int, seed: int, acc: float, *extra: str) -> dict:
    config = vars(build_parser().parse_args(["--mode", mode, "--dataset", dataset, "--shots", str(shots),
                                             "--seed", str(seed), "--backbone", "ViT-B/16", *extra]))
    return {"mode": mode, "dataset": dataset, "shots": shots, "seed": seed, "backbone": "ViT-B/16",
            "config": config, "zero_shot_acc": ZERO_SHOT[dataset] - (1.0 if mode == "qlora" else 0.0),
            "test_acc": acc, "train_seconds": 3725.0 if mode == "lora" else 65.4, "total_steps": 500 * shots,
            "peak_memory_mb": 4823.0 if mode == "lora" else 1790.0 + seed, "memory_kind": "cuda_allocated",
            "peak_memory_reserved_mb": 5000.0, "model_footprint_mb": 570.0 if mode == "lora" else 160.0,
            "trainable_params": 184320, "quantized": mode == "qlora", "device": "cuda"}


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "results.jsonl"
    for (mode, dataset, shots), accs in ACCURACY.items():
        for seed, acc in enumerate(accs, start=1):
            if acc is not None:
                append_jsonl(path, record(mode, dataset, shots, seed, acc))
    with open(path, "a") as f:
        f.write("{this is not json\n")  # line 18
    append_jsonl(path, record("qlora", "dtd", 1, 1, 10.0, "--n_iters", "1"))  # a smoke run: not the same method
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = summarize_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_row(markdown: str, *first_cells: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting {first_cells} in\n{markdown}")


def test_paper_table_mean_std_seed_counts_and_missing_seed(results, tmp_path, capsys):
    code, out, err = run([str(results), "--out", str(tmp_path / "out"), "--tables", "paper"], capsys)
    assert code == 0
    assert f"{results}:18: not valid JSON" in err
    assert table_row(out, "Method")[2:] == ["Caltech", "DTD", "Average"]
    assert table_row(out, "lora", "1")[2:] == ["91.00 ± 1.00 (n=3)", "52.00 ± 2.00 (n=3)", "71.50 ± 1.50 (n=3)"]
    assert table_row(out, "qlora", "1")[2] == "91.00 ± 0.00 (n=3)"
    # The missing seed is flagged in its cell and keeps the average from passing as complete.
    assert table_row(out, "qlora", "4")[2:] == ["95.00 ± 1.00 (n=3)", "⚠ 61.00 ± 1.41 (n=2) no seed 3",
                                               "⚠ 78.00 partial: seeds missing in DTD"]
    # Runs with other training flags are their own method, never averaged into the real runs.
    assert table_row(out, "qlora (n_iters=1)", "1")[2:] == [
        "—", "⚠ 10.00 (n=1) no seed 2,3", "⚠ 10.00 partial: 1/2 datasets; seeds missing in DTD"]
    assert table_row(out, "zero-shot", "0")[2:] == ["88.00 ± 0.00 (n=3)", "40.00 ± 0.00 (n=3)", "64.00"]
    assert table_row(out, "zero-shot (4-bit base)", "0")[2] == "87.00 ± 0.00 (n=3)"

    with open(tmp_path / "out" / "paper_table.csv") as f:
        rows = {(r["method"], r["shots"], r["dataset"]): r for r in csv.DictReader(f)}
    assert (rows[("qlora", "4", "dtd")]["n_seeds"], rows[("qlora", "4", "dtd")]["missing_seeds"]) == ("2", "3")
    assert rows[("qlora", "4", "dtd")]["complete"] == "False"
    assert (rows[("lora", "1", "average")]["mean"], rows[("lora", "1", "average")]["std"]) == ("71.5", "1.5")
    assert not (tmp_path / "out" / "efficiency_table.csv").exists()


def test_efficiency_table_and_plot(results, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run([str(results), "--out", str(out_dir), "--tables", "efficiency", "--reference"], capsys)
    assert code == 0
    assert "Top-1 accuracy" not in out
    assert table_row(out, "Dataset") == ["Dataset", "Shots", "Method", "Training time", "Peak memory (MB)",
                                         "Model footprint (MB)", "Accuracy (%)"]
    assert table_row(out, "Caltech", "1", "lora")[3:] == ["01:02:05", "4823 (cuda_allocated; 5000 reserved)",
                                                          "570.0", "91.00 ± 1.00 (n=3)"]
    # peak memory is the highest over seeds
    assert table_row(out, "Caltech", "1", "qlora")[3:5] == ["00:01:05", "1793 (cuda_allocated; 5000 reserved)"]
    assert table_row(out, "Caltech", "0", "zero-shot")[3:] == ["—", "—", "—", "88.00 ± 0.00 (n=3)"]
    with open(out_dir / "efficiency_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"zero-shot", "zero-shot (4-bit base)", "lora", "qlora", "qlora (n_iters=1)"}
    png = (out_dir / "accuracy_vs_shots.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_expected_seeds_can_be_given(results, tmp_path, capsys):
    code, out, _ = run([str(results), "--out", str(tmp_path), "--tables", "paper", "--seeds", "1", "2", "3", "4"],
                       capsys)
    assert code == 0
    assert table_row(out, "lora", "1")[2] == "⚠ 91.00 ± 1.00 (n=3) no seed 4"


def test_command_line_errors(tmp_path):
    missing = subprocess.run([sys.executable, "summarize.py", str(tmp_path / "nope.jsonl")], cwd=REPO,
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert "nope.jsonl: no such results file" in missing.stderr
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    empty = subprocess.run([sys.executable, "summarize.py", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True)
    assert empty.returncode == 2
    assert "bad.jsonl:1: a JSON list, not an object; line skipped" in empty.stderr
    assert "no readable results" in empty.stderr
