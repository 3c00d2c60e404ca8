"""summaries/fewshot.py: the paper's table, through summarize.py on a synthetic few-shot results file."""
from __future__ import annotations

import csv

from summary_results import run, table_row, write_over_drawn_results


def test_paper_table_mean_std_seed_counts_and_missing_seed(fewshot_results, tmp_path, capsys):
    code, out, err = run([str(fewshot_results), "--out", str(tmp_path / "out"), "--tables", "paper"], capsys)
    assert code == 0
    assert f"{fewshot_results}:18: not valid JSON" in err
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


def test_cells_trained_on_fewer_distinct_images_than_their_shots_are_marked(tmp_path, capsys):
    results = write_over_drawn_results(tmp_path / "results.jsonl")
    code, out, _ = run([str(results), "--out", str(tmp_path / "out"), "--tables", "paper", "--plot"], capsys)
    assert code == 0
    assert table_row(out, "Method")[2:] == ["Caltech", "DTD", "Average"]
    # One seed over-drawn is enough: the cell's 16 shots overstate what it trained on, and so does its average.
    assert table_row(out, "lora", "16")[2:] == ["91.50 ± 0.71 (n=2)", "51.50 ± 0.71 (n=2) *6 distinct",
                                                "71.50 ± 0.71 (n=2) *6 distinct"]
    assert table_row(out, "lora", "4")[3] == "⚠ 40.00 (n=1) no seed 2"  # a line without shots_drawn: as drawn
    assert "*N distinct: trained on fewer distinct images than the shots" in out
    with open(tmp_path / "out" / "paper_table.csv") as f:
        rows = {(r["shots"], r["dataset"]): r["shots_drawn"] for r in csv.DictReader(f) if r["method"] == "lora"}
    assert rows == {("16", "caltech101"): "", ("16", "dtd"): "6", ("16", "average"): "6",
                    ("4", "caltech101"): "", ("4", "dtd"): "", ("4", "average"): ""}
    assert (tmp_path / "out" / "accuracy_vs_shots.png").read_bytes().startswith(b"\x89PNG")


def test_no_mark_and_no_note_where_every_run_drew_its_shots(fewshot_results, tmp_path, capsys):
    code, out, _ = run([str(fewshot_results), "--out", str(tmp_path / "out"), "--tables", "paper"], capsys)
    assert code == 0
    assert "distinct" not in out
