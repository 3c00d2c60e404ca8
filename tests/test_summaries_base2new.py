"""summaries/base2new.py: the base-to-novel table, through summarize.py on a synthetic results file."""
from __future__ import annotations

import csv
import statistics

import pytest
from summary_results import protocol_record, section, summarize, table_row

from qlora_clip.evaluation.metrics import harmonic_mean
from qlora_clip.paper import PUBLISHED_BASE2NEW
from qlora_clip.run.results import append_jsonl


def test_base2new_table_averages_hm_as_the_hm_of_the_averages(protocol_results, tmp_path, capsys):
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "base2new")
    assert "Top-1 accuracy (%)" not in out  # the few-shot table was not asked for
    assert table_row(out, "Method")[3:] == ["Caltech", "DTD", "Average"]
    assert table_row(out, "lora", "16", "base")[3:] == ["92.00 ± 2.00 (n=3)", "72.00 ± 2.00 (n=3)",
                                                        "82.00 ± 2.00 (n=3)"]
    assert table_row(out, "lora", "16", "new")[3:] == ["52.00 ± 2.00 (n=3)", "32.00 ± 2.00 (n=3)",
                                                       "42.00 ± 2.00 (n=3)"]
    hm = table_row(out, "lora", "16", "HM")[3:]
    per_seed = [harmonic_mean(80.0 + 2 * i, 40.0 + 2 * i) for i in range(3)]
    assert hm[0].startswith(f"{harmonic_mean(92, 52):.2f} ± ")
    # HM(mean base, mean new) = 55.55, not the mean of the datasets' HMs (55.38).
    assert hm[2] == f"{harmonic_mean(82, 42):.2f} ± {statistics.stdev(per_seed):.2f} (n=3)" == "55.55 ± 2.21 (n=3)"
    assert statistics.fmean([harmonic_mean(92, 52), harmonic_mean(72, 32)]) == pytest.approx(55.38, abs=0.01)
    assert table_row(out, "zero-shot", "0", "base")[3:] == ["85.00 ± 0.00 (n=3)", "45.00 ± 0.00 (n=3)", "65.00"]
    assert table_row(out, "zero-shot", "0", "HM")[5] == f"{harmonic_mean(65, 65):.2f}"
    with open(tmp_path / "out" / "base2new_table.csv") as f:
        rows = {(r["method"], r["dataset"], r["classes"]): r for r in csv.DictReader(f)}
    assert float(rows[("lora", "average", "HM")]["mean"]) == pytest.approx(harmonic_mean(82, 42), abs=1e-4)
    assert rows[("lora", "average", "HM")]["complete"] == "True"


def test_a_missing_seed_makes_the_average_hm_partial(protocol_results, tmp_path, capsys):
    lines = protocol_results.read_text().splitlines()
    kept = [line for line in lines if not ('"dtd"' in line and '"seed": 3' in line)]
    protocol_results.write_text("\n".join(kept) + "\n")
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "base2new")
    hm = table_row(out, "lora", "16", "HM")
    assert hm[4].startswith("⚠")
    assert "no seed 3" in hm[4]
    assert hm[5].startswith("⚠ ")
    assert "partial" in hm[5]


def test_reference_prints_the_published_base2new_averages(protocol_results, tmp_path, capsys):
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "base2new", "--reference")
    published = section(out, "## Published base-to-novel averages")
    for method, (base, new, hm) in PUBLISHED_BASE2NEW.items():
        assert table_row(published, method)[1:] == [f"{base:.2f}", f"{new:.2f}", f"{hm:.2f}"]
    assert table_row(published, "CLIP-SVD")[1:] == ["84.38", "76.29", "80.13"]
    assert table_row(published, "zero-shot CLIP")[1:] == ["69.34", "74.22", "71.70"]


def test_base_new_and_hm_of_runs_that_drew_fewer_distinct_images_than_their_shots_are_marked(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    for dataset, drawn in (("caltech101", 16), ("dtd", 5)):
        for seed in (1, 2):
            append_jsonl(results, protocol_record(dataset, seed, "--protocol", "base2new", test_acc=80.0,
                                                  zero_shot_acc=70.0, base_acc=80.0, new_acc=60.0 + seed,
                                                  hm_acc=70.0, zero_shot_base_acc=70.0, zero_shot_new_acc=65.0,
                                                  zero_shot_hm_acc=67.0, shots_drawn=drawn))
    out, _ = summarize(results, tmp_path, capsys, "--tables", "base2new")
    for part in ("base", "new", "HM"):
        caltech, dtd, average = table_row(out, "lora", "16", part)[3:]
        assert "distinct" not in caltech
        assert dtd.endswith(" *5 distinct")
        assert average.endswith(" *5 distinct")
        assert "distinct" not in "".join(table_row(out, "zero-shot", "0", part))
