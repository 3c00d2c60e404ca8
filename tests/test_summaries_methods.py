"""summaries/methods.py through summarize.py: every method side by side, sortable by any column; the
paper and efficiency tables and the plot take any set of methods."""
from __future__ import annotations

import csv

import pytest
from summary_results import fewshot_record, section, summarize, table_row, write_over_drawn_results

from qlora_clip.run.results import append_jsonl
from summaries.methods import SORT_KEYS

# mode -> (test accuracy for seeds 1 and 2, trainable params, adapter MB, footprint MB, seconds, peak MB)
RUNS = {
    "lora": ((80.0, 82.0), 184_320, 0.703, 571.0, 100.0, 3000.0),
    "vera": ((75.0, 77.0), 36_864, 1.2, 571.2, 90.0, 2950.0),
    "bitfit": ((70.0, 71.0), 46_080, 0.176, 571.0, 60.0, 2800.0),
    "qlora": ((79.0, 81.0), 184_320, 0.703, 160.7, 120.0, 3100.0),
}


def first_column(markdown: str) -> list[str]:
    """The Method cells of the table's body, in order."""
    cells = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ")]
    return cells[2:]  # after the header and the alignment row


@pytest.fixture
def methods_results(tmp_path):
    path = tmp_path / "methods.jsonl"
    for mode, (accs, trainable, adapter_mb, footprint, seconds, peak) in RUNS.items():
        for seed, acc in enumerate(accs, start=1):
            record = fewshot_record(mode, "dtd", 2, seed, acc)
            record.update(trainable_params=trainable, adapter_size_mb=adapter_mb, model_footprint_mb=footprint,
                          train_seconds=seconds, peak_memory_mb=peak, memory_kind="cpu_rss",
                          zero_shot_acc=10.0 if mode != "qlora" else 9.0)
            append_jsonl(path, record)
    return path


def test_methods_table_puts_every_method_side_by_side(methods_results, tmp_path, capsys):
    out, _ = summarize(methods_results, tmp_path, capsys, "--tables", "methods")
    assert "## Methods, ViT-B/16, 2 shots, dtd" in out
    assert table_row(out, "Method") == ["Method", "Kind", "Trainable params", "Adapter on disk (MB)",
                                        "Weight footprint (MB)", "Training time", "Peak memory (MB)", "Zero-shot (%)",
                                        "Test (%)"]
    assert table_row(out, "vera") == ["vera", "adapter", "36,864", "1.200", "571.2", "00:01:30", "2,950",
                                      "10.00 ± 0.00 (n=2)", "76.00 ± 1.41 (n=2)"]
    # the table's order by default: lora, qlora, ..., vera, ..., bitfit
    assert first_column(out) == ["lora", "qlora", "vera", "bitfit"]
    with open(tmp_path / "out" / "methods_table.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["bitfit"]["test_mean"] == "70.5"
    assert rows["bitfit"]["complete"] == "True"
    assert rows["bitfit"]["kind"] == "adapter"


@pytest.mark.parametrize("column, first", [("test_acc", "lora"), ("trainable_params", "vera"),
                                           ("adapter_mb", "bitfit"), ("train_seconds", "bitfit"),
                                           ("footprint_mb", "qlora"), ("peak_memory_mb", "bitfit"),
                                           ("zero_shot", "lora")])
def test_sort_puts_the_best_first(methods_results, tmp_path, capsys, column, first):
    assert column in SORT_KEYS
    out, _ = summarize(methods_results, tmp_path, capsys, "--tables", "methods", "--sort", column)
    assert first_column(out)[0] == first


def test_the_other_tables_and_the_plot_take_any_methods(methods_results, tmp_path, capsys):
    out, _ = summarize(methods_results, tmp_path, capsys, "--tables", "paper,efficiency", "--plot")
    for mode in RUNS:
        assert table_row(out, mode, "2")
        assert table_row(out, "DTD", "2", mode)
    assert (tmp_path / "out" / "accuracy_vs_shots.png").read_bytes().startswith(b"\x89PNG")


def test_a_test_accuracy_trained_on_fewer_distinct_images_than_its_shots_is_marked(tmp_path, capsys):
    results = write_over_drawn_results(tmp_path / "results.jsonl")
    out, _ = summarize(results, tmp_path, capsys, "--tables", "methods")
    sixteen = section(out, "## Methods, ViT-B/16, 16 shots")
    assert table_row(sixteen, "lora")[7:] == ["64.00 ± 0.00 (n=2)", "71.50 ± 0.71 (n=2) *6 distinct"]
    assert "*6" not in section(out, "## Methods, ViT-B/16, 4 shots")  # written before shots_drawn: as drawn
    with open(tmp_path / "out" / "methods_table.csv") as f:
        assert {r["shots"]: r["shots_drawn"] for r in csv.DictReader(f)} == {"4": "", "16": "6"}
