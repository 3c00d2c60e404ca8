"""summaries/pictures.py, summaries/cards.py and the methods table's figures beyond the accuracy, through
summarize.py: calibration, OOD and forgetting columns; tables per protocol card; the PNGs of --plot, opened."""
from __future__ import annotations

import csv

import pytest
from PIL import Image
from summary_results import fewshot_record, summarize, table_row

from qlora_clip.run.results import append_jsonl
from summaries.cards import NO_CARD, card_label, folder_name
from summaries.pictures import pareto_front, pooled_bins

BINS = 15
LAST = "flags changed from the defaults; last step; no validation data"
VAL = "flags changed from the defaults; best val accuracy; few-shot val images"


def reliability(correct: int, images: int, confidence: float) -> dict:
    """All images in the bin of `confidence`."""
    k = min(int(confidence * BINS), BINS - 1)
    counts = [0] * BINS
    counts[k] = images
    return {"bin_counts": counts, "bin_accuracy": [correct / images if i == k else None for i in range(BINS)],
            "bin_confidence": [confidence if i == k else None for i in range(BINS)], "confidence": confidence}


def beyond_record(mode: str, seed: int, acc: float, card: str = LAST, **fields) -> dict:
    """A line with every figure: calibration, OOD sets, an --eval_datasets target, an interpolation, a card."""
    record = fewshot_record(mode, "dtd", 2, seed, acc, "--eval_datasets", "eurosat", "--ood_datasets", "ood_sun",
                            "--interpolate", "0", "1")
    record.update(
        zero_shot_acc=40.0, test_ece=10.0 + seed, test_nll=1.0, test_brier=0.5, zero_shot_ece=5.0,
        zero_shot_nll=1.5, zero_shot_brier=0.7,
        reliability={"test": reliability(3, 4, 0.9), "zero_shot": reliability(2, 4, 0.6)},
        ood={"ood_sun": {"images": 10, "auroc": 90.0 + seed, "fpr95": 30.0, "zero_shot_auroc": 85.0,
                         "zero_shot_fpr95": 40.0},
             "ood_places": {"images": 10, "auroc": 80.0 + seed, "fpr95": 50.0, "zero_shot_auroc": 75.0,
                            "zero_shot_fpr95": 60.0}},
        eval_datasets={"eurosat": {"test_acc": 30.0 + seed, "zero_shot_acc": 36.0}},
        interpolation=[{"alpha": 0.0, "test_acc": 40.0, "test_ece": 5.0, "test_nll": 1.5, "test_brier": 0.7,
                        "eval_datasets": {"eurosat": 36.0}},
                       {"alpha": 1.0, "test_acc": acc, "test_ece": 10.0 + seed, "test_nll": 1.0, "test_brier": 0.5,
                        "eval_datasets": {"eurosat": 30.0 + seed}}],
        protocol_card={"label": card, "selection": "last step"}, **fields)
    return record


@pytest.fixture
def beyond_results(tmp_path):
    path = tmp_path / "beyond.jsonl"
    for mode, accs in (("lora", (70.0, 72.0)), ("qlora", (69.0, 71.0))):
        for seed, acc in enumerate(accs, start=1):
            append_jsonl(path, beyond_record(mode, seed, acc))
    return path


def test_the_methods_table_has_calibration_ood_and_forgetting_columns(beyond_results, tmp_path, capsys):
    out, _ = summarize(beyond_results, tmp_path, capsys, "--tables", "methods")
    assert table_row(out, "Method")[-5:] == ["ECE (%)", "NLL", "OOD AUROC (%)", "FPR@95 (%)", "Δ on targets (pts)"]
    # ECE 11, 12; AUROC: the mean over the two OOD sets, (91 + 81) / 2 and (92 + 82) / 2; Δ: 31 - 36 and 32 - 36.
    assert table_row(out, "lora")[-5:] == ["11.50 ± 0.71 (n=2)", "1.00 ± 0.00 (n=2)", "86.50 ± 0.71 (n=2)",
                                           "40.00 ± 0.00 (n=2)", "-4.50 ± 0.71 (n=2)"]
    with open(tmp_path / "out" / "methods_table.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["lora"]["ood_auroc_mean"] == "86.5"
    assert rows["lora"]["forgetting_mean"] == "-4.5"
    sorted_out, _ = summarize(beyond_results, tmp_path, capsys, "--tables", "methods", "--sort", "test_ece")
    assert table_row(sorted_out, "Method") == table_row(out, "Method")


def test_lines_without_the_figures_keep_the_table_as_it_was(tmp_path, capsys):
    path = tmp_path / "old.jsonl"
    append_jsonl(path, fewshot_record("lora", "dtd", 2, 1, 70.0))
    out, _ = summarize(path, tmp_path, capsys, "--tables", "methods")
    assert table_row(out, "Method")[-1] == "Test (%)"
    assert f"Protocol card: {NO_CARD}." in out


def test_tables_are_built_per_protocol_card_and_never_average_across_cards(beyond_results, tmp_path, capsys):
    # The same method, dataset, shots and seed under another card: not a repeat of the line it would replace.
    append_jsonl(beyond_results, beyond_record("lora", 1, 50.0, card=VAL))
    out, _ = summarize(beyond_results, tmp_path, capsys, "--tables", "methods")
    tables = ["## " + part for part in out.split("## ")[1:]]
    assert [table.split("\n")[2] for table in tables] == [f"Protocol card: {LAST}.", f"Protocol card: {VAL}."]
    last, val = tables
    assert table_row(last, "lora")[8] == "71.00 ± 1.41 (n=2)"  # seeds 1 and 2 of the last-step card only
    assert table_row(val, "lora")[8] == "50.00 (n=1)"
    for label in (LAST, VAL):
        assert (tmp_path / "out" / folder_name(label) / "methods_table.csv").is_file()
    assert folder_name(VAL) == "flags-changed-from-the-defaults_best-val-accuracy_few-shot-val-images"


def test_plot_draws_every_picture_the_runs_have_data_for(beyond_results, tmp_path, capsys):
    _, err = summarize(beyond_results, tmp_path, capsys, "--plot")
    out = tmp_path / "out"
    pictures = ["accuracy_vs_shots.png", "accuracy_vs_memory.png", "accuracy_vs_time.png", "interpolation.png",
                "reliability/ViT-B-16_2shots_lora.png", "reliability/ViT-B-16_2shots_qlora.png",
                "reliability/ViT-B-16_zero-shot.png", "reliability/ViT-B-16_zero-shot-4-bit-base.png"]
    for name in pictures:
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            assert image.size[0] > 300
        assert str(out / name) in err
    assert sorted(p.name for p in (out / "reliability").iterdir()) == sorted(
        name.split("/")[1] for name in pictures if name.startswith("reliability/"))


def test_the_pareto_front_keeps_what_no_cheaper_point_beats():
    points = [(100.0, 70.0), (50.0, 60.0), (200.0, 65.0), (50.0, 55.0), (300.0, 75.0)]
    assert pareto_front(points) == [(50.0, 60.0), (100.0, 70.0), (300.0, 75.0)]


def test_pooled_bins_add_the_runs_images():
    runs = [{"reliability": {"test": reliability(3, 4, 0.9)}}, {"reliability": {"test": reliability(1, 4, 0.9)}}]
    counts, accuracy, confidence, ece = pooled_bins(runs, "test")
    assert counts[13] == 8
    assert accuracy[13] == 0.5
    assert confidence[13] == pytest.approx(0.9)
    assert ece == pytest.approx(0.4)


def test_a_card_label_comes_from_the_line():
    assert card_label({"protocol_card": {"label": VAL}}) == VAL
    assert card_label({}) == NO_CARD
