"""qlora_clip/evaluation/beyond.py through main.py: calibration, --ood_datasets, --interpolate and --save_predictions
in the results line, from the passes the accuracy already makes (counted), the predictions file reproducing the
line's accuracy and ECE, and the ends of the interpolation being the zero-shot and the trained model."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import dataset_trees as trees
import pytest
from conftest import make_color_folder

import main
from qlora_clip.evaluation.calibration import calibration
from qlora_clip.evaluation.metrics import accuracy_percent
from qlora_clip.evaluation.predictions import read_predictions
from qlora_clip.methods.interface import Adapted
from qlora_clip.run import schema
from run_utils import parse_run

ALPHAS = ["0", "0.5", "1"]


def counting_passes(monkeypatch) -> tuple[Counter, Counter]:
    """(passes per test set, images encoded per test set) of every evaluation pass from now on."""
    passes, encoded, current = Counter(), Counter(), []
    real_evaluate, real_embeddings = main.Evaluator.evaluate, Adapted.image_embeddings

    def evaluate(self, test, desc="test", keep=None):
        passes[test.name] += 1
        current.append(test.name)
        try:
            return real_evaluate(self, test, desc, keep)
        finally:
            current.pop()

    def image_embeddings(adapted, images):
        if current:  # training encodes images too; only the evaluations' count here
            encoded[current[-1]] += len(images)
        return real_embeddings(adapted, images)
    monkeypatch.setattr(main.Evaluator, "evaluate", evaluate)
    monkeypatch.setattr(Adapted, "image_embeddings", image_embeddings)
    return passes, encoded


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One trained run with every figure: an OOD dataset by name and a folder of images, a transfer target, three
    alphas, the predictions file; the vision tower adapted, so each pass encodes its images."""
    tmp = tmp_path_factory.mktemp("beyond")
    root = tmp / "data"
    trees.build("dtd", root)
    trees.build("eurosat", root)
    trees.build_ood_set("ood_textures", root)
    folder = make_color_folder(tmp / "ood-folder", per_class=1, size=32, seed=3)
    monkeypatch = pytest.MonkeyPatch()
    passes, encoded = counting_passes(monkeypatch)
    try:
        record = main.main(["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(root), "--shots", "2",
                            "--n_iters", "3", "--batch_size", "4", "--lr", "5e-2",
                            "--eval_datasets", "eurosat", "--ood_datasets", "ood_textures", str(folder),
                            "--interpolate", *ALPHAS, "--save_predictions", "--eval_cache_dir", "",
                            "--results_file", str(tmp / "results.jsonl")])
    finally:
        monkeypatch.undo()
    return record, passes, encoded, str(folder)


def test_the_line_has_the_declared_fields_of_each_flag(run):
    record, _, _, folder = run
    names = schema.expected_names(record)
    assert {"ood", "interpolation", "predictions_file", "test_ece", "zero_shot_ece", "protocol_card"} <= names
    assert set(record) == names
    assert list(record["ood"]) == ["ood_textures", folder]
    assert record["ood"]["ood_textures"]["images"] == 3
    assert [entry["alpha"] for entry in record["interpolation"]] == [0.0, 0.5, 1.0]
    for figures in record["ood"].values():
        for name in ("auroc", "fpr95", "zero_shot_auroc", "zero_shot_fpr95"):
            assert 0 <= figures[name] <= 100
    assert sum(record["reliability"]["test"]["bin_counts"]) == 8  # the dtd tree's 4 x 2 test images


def test_the_protocol_card_says_where_the_numbers_came_from(run):
    card = run[0]["protocol_card"]
    assert card["hyperparameters"] == "flags changed from the defaults"
    assert card["changed_flags"] == {"batch_size": 4, "lr": 0.05, "n_iters": 3}
    assert card["selection"] == "last step"
    assert card["selected_step"] == 6  # 2 shots x 3 iterations
    assert card["validation"] == "none"
    assert card["test_set_used_to_choose"] is False
    assert card["label"] == "flags changed from the defaults; last step; no validation data"


def test_each_extra_figure_costs_no_pass_and_each_extra_set_one_pass_per_model(run):
    """The test set: zero-shot, trained and one pass per alpha, nothing more for calibration, the OOD scores or the
    predictions; each OOD set and target: one pass per model (zero-shot, trained, each alpha)."""
    _, passes, encoded, folder = run
    models = 2 + len(ALPHAS)
    sizes = {"dtd": 8, "eurosat": 8, "ood_textures": 3, folder: 4}  # the trees: 4 classes x 2
    assert passes == {name: models for name in sizes}
    assert encoded == {name: models * size for name, size in sizes.items()}


def test_the_predictions_file_reproduces_the_lines_accuracy_and_calibration(run):
    record = run[0]
    predictions = read_predictions(record["predictions_file"])
    labels = predictions.labels
    assert predictions.test_logits.shape == predictions.zero_shot_logits.shape == (8, 4)
    assert len(predictions.sources) == 8
    assert predictions.classnames == json.loads(Path(record["subset_file"]).read_text())["classnames"]
    for logits, prefix, accuracy in ((predictions.test_logits, "test", record["test_acc"]),
                                     (predictions.zero_shot_logits, "zero_shot", record["zero_shot_acc"])):
        assert accuracy_percent(int((logits.argmax(1) == labels).sum()), len(labels)) == accuracy
        figures = calibration(logits, labels)
        assert 100 * figures.ece == pytest.approx(record[f"{prefix}_ece"], rel=1e-9, abs=1e-12)
        assert figures.nll == pytest.approx(record[f"{prefix}_nll"], rel=1e-9)
        assert figures.brier == pytest.approx(record[f"{prefix}_brier"], rel=1e-9)
    assert not (predictions.test_logits == predictions.zero_shot_logits).all()  # training changed the model


def test_interpolation_ends_are_the_zero_shot_and_the_trained_figures(run):
    record = run[0]
    first, middle, last = record["interpolation"]
    for entry, prefix, accuracy in ((first, "zero_shot", "zero_shot_acc"), (last, "test", "test_acc")):
        assert entry["test_acc"] == record[accuracy]
        for figure in ("ece", "nll", "brier"):
            assert entry[f"test_{figure}"] == record[f"{prefix}_{figure}"]
    for name, figures in record["ood"].items():
        assert first["ood"][name] == {"auroc": figures["zero_shot_auroc"], "fpr95": figures["zero_shot_fpr95"]}
        assert last["ood"][name] == {"auroc": figures["auroc"], "fpr95": figures["fpr95"]}
    target = record["eval_datasets"]["eurosat"]
    assert first["eval_datasets"]["eurosat"] == target["zero_shot_acc"]
    assert last["eval_datasets"]["eurosat"] == target["test_acc"]
    assert middle["test_nll"] != first["test_nll"]
    assert middle["test_nll"] != last["test_nll"]
    assert math.isfinite(middle["test_ece"])


def test_ood_images_are_encoded_once_when_the_vision_tower_is_frozen(tmp_path, color_folder, monkeypatch):
    folder = make_color_folder(tmp_path / "ood", per_class=1, size=32, seed=4)
    passes, encoded = counting_passes(monkeypatch)
    record = main.main(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "1",
                        "--n_iters", "0", "--encoder", "text", "--ood_datasets", str(folder), "--eval_cache_dir", "",
                        "--results_file", str(tmp_path / "results.jsonl")])
    assert passes == {"folder": 2, str(folder): 2}
    assert encoded == {"folder": 16, str(folder): 4}
    figures = record["ood"][str(folder)]
    assert figures["auroc"] == figures["zero_shot_auroc"]  # nothing trained: the same model twice


def test_ood_names_are_our_datasets_test_images_or_folders(tmp_path):
    tree = trees.build_ood_set("ood_sun", tmp_path / "data")
    spec = parse_run(["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tree.root),
                      "--ood_datasets", "ood_sun"])
    images = main.read_ood(spec, "ood_sun")
    assert [item.source for item in images.test] == tree.images
    folder = main.read_ood(spec, str(tree.folder))
    assert [item.source for item in folder.test] == tree.images
    assert folder.name == str(tree.folder)
