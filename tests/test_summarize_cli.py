"""summarize.py, the command: its flags, its errors, and which runs go to which table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from summary_results import fewshot_record, protocol_record, run, section, summarize, table_row

from qlora_clip.run.results import append_jsonl

REPO = Path(__file__).resolve().parents[1]


def test_expected_seeds_can_be_given(fewshot_results, tmp_path, capsys):
    code, out, _ = run([str(fewshot_results), "--out", str(tmp_path), "--tables", "paper",
                        "--seeds", "1", "2", "3", "4"], capsys)
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


def test_protocols_keep_to_their_own_tables(protocol_results, tmp_path, capsys):
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "paper,efficiency")
    paper = section(out, "## Top-1 accuracy")
    assert table_row(paper, "Method")[2:] == ["ImageNet", "Caltech", "DTD", "Average"]
    # One few-shot run per dataset (99.0), never the base-to-novel runs' base accuracy; the expected
    # seeds are the few-shot runs' (1, 2), not the base-to-novel runs' third.
    assert table_row(paper, "lora", "16")[3:5] == ["⚠ 99.00 (n=1) no seed 2", "⚠ 99.00 (n=1) no seed 2"]
    assert "base2new" not in out
    assert "(protocol=" not in out
    efficiency = section(out, "## Efficiency")
    assert [line for line in efficiency.splitlines() if "| DTD |" in line and "| lora |" in line][0].endswith(
        "⚠ 99.00 (n=1) no seed 2 |")


def test_default_tables_leave_out_the_empty_ones_and_named_ones_say_so(tmp_path, capsys):
    path = tmp_path / "fewshot.jsonl"
    append_jsonl(path, protocol_record("dtd", 1, test_acc=60.0, zero_shot_acc=40.0))
    out, err = summarize(path, tmp_path, capsys)
    assert "## Top-1 accuracy" in out
    assert "## Efficiency" in out
    assert "Base-to-novel" not in out
    assert not (tmp_path / "out" / "base2new_table.csv").exists()
    _, err = summarize(path, tmp_path, capsys, "--tables", "base2new")
    assert "note: no runs for the base2new table" in err


@pytest.mark.parametrize("field, raw, message", [
    ("shots", '"1"', "'shots' is \"1\", not an integer"),
    ("test_acc", "NaN", "'test_acc' is NaN, not a finite number or null"),  # Python's json reads NaN
    ("test_acc", '"93.0"', "'test_acc' is \"93.0\", not a finite number or null"),
])
def test_a_line_with_a_bad_value_is_reported_and_the_rest_summarized(fewshot_results, tmp_path, capsys, field,
                                                                     raw, message):
    # A fourth lora seed on Caltech: were it read, the lora row would change (or the tables would stop).
    bad = json.dumps({**fewshot_record("lora", "caltech101", 1, 4, 93.0), field: "@@"}).replace('"@@"', raw)
    with open(fewshot_results, "a") as f:
        f.write(bad + "\n")  # line 20
    out, err = summarize(fewshot_results, tmp_path, capsys, "--tables", "paper,efficiency")
    assert f"{fewshot_results}:20: {message}; line skipped" in err
    assert f"{fewshot_results}:18: not valid JSON" in err
    assert table_row(out, "lora", "1")[2:] == ["91.00 ± 1.00 (n=3)", "52.00 ± 2.00 (n=3)", "71.50 ± 1.50 (n=3)"]
    assert table_row(out, "Caltech", "1", "lora")[6] == "91.00 ± 1.00 (n=3)"
