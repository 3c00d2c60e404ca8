"""summaries/efficiency.py and summaries/plot.py, through summarize.py on a synthetic few-shot results file."""
from __future__ import annotations

import csv

from summary_results import run, summarize, table_row, write_over_drawn_results


def test_efficiency_table_and_plot(fewshot_results, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run([str(fewshot_results), "--out", str(out_dir), "--tables", "efficiency", "--reference"], capsys)
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
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000


def test_an_accuracy_trained_on_fewer_distinct_images_than_its_shots_is_marked(tmp_path, capsys):
    results = write_over_drawn_results(tmp_path / "results.jsonl")
    out, _ = summarize(results, tmp_path, capsys, "--tables", "efficiency")
    assert table_row(out, "DTD", "16", "lora")[6] == "51.50 ± 0.71 (n=2) *6 distinct"
    assert table_row(out, "Caltech", "16", "lora")[6] == "91.50 ± 0.71 (n=2)"
    assert table_row(out, "DTD", "0", "zero-shot")[6] == "40.00 ± 0.00 (n=2)"  # no draw behind a zero-shot row
    with open(tmp_path / "out" / "efficiency_table.csv") as f:
        drawn = {(r["dataset"], r["shots"], r["method"]): r["shots_drawn"] for r in csv.DictReader(f)}
    assert drawn[("dtd", "16", "lora")] == "6"
    assert drawn[("caltech101", "16", "lora")] == ""
