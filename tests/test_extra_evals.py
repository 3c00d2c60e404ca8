"""qlora_clip/evaluation/extra_evals.py: what a run evaluates besides its test set, through main.py: --eval_datasets
(cross-dataset transfer, domain generalization) and base-to-novel's new classes with their own classifier."""
from __future__ import annotations

import json
from pathlib import Path

import dataset_trees as trees
import pytest

import main
from qlora_clip.evaluation.metrics import harmonic_mean
from qlora_clip.evaluation import extra_evals
from qlora_clip.run import schema
from qlora_clip.errors import UserError
from qlora_clip.paper import PUBLISHED_BASE2NEW


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    trees.build("dtd", root)
    trees.build("eurosat", root)
    trees.build_variant("imagenet_a", root)
    return root


def argv(root, tmp_path, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(root), "--shots", "2", "--batch_size", "4",
            "--lr", "1e-2", "--results_file", str(tmp_path / "results.jsonl"), "--eval_datasets", "eurosat",
            "imagenet_a", *extra]


def test_adapter_is_evaluated_on_each_target_with_its_own_classes(data_root, tmp_path, monkeypatch):
    seen = []
    real_accuracy = main.Evaluator.accuracy

    def recording(self, test, desc="test"):
        seen.append((test.name, len(test.prompts), len(test.items)))
        return real_accuracy(self, test, desc)

    monkeypatch.setattr(main.Evaluator, "accuracy", recording)
    save = ["--save_path", str(tmp_path / "ckpt"), "--n_iters", "2"]
    record = main.main(argv(data_root, tmp_path, *save))

    dtd_test = 4 * trees.PER_CLASS["test"]  # the miniature trees have 4 classes (base-to-novel needs 2 + 2)
    eurosat_test = 4 * trees.PER_CLASS["test"]
    imagenet_a_test = 4 * trees.VARIANT_IMAGES
    assert seen == [("dtd", 4, dtd_test), ("dtd", 4, dtd_test),                       # zero-shot, then trained
                    ("eurosat", 4, eurosat_test), ("eurosat", 4, eurosat_test),
                    ("imagenet_a", 4, imagenet_a_test), ("imagenet_a", 4, imagenet_a_test)]
    assert record["protocol"] == "fewshot"
    assert list(record["eval_datasets"]) == ["eurosat", "imagenet_a"]
    assert set(record) == schema.expected_names(record)
    assert "eval_datasets" in schema.expected_names(record)
    schema.check(record)
    for accs in record["eval_datasets"].values():
        assert set(accs) == {"test_acc", "zero_shot_acc"}
        assert all(0 <= v <= 100 for v in accs.values())

    # Zero-shot does not depend on training: the same as in a run that does not train.
    untrained = main.main(argv(data_root, tmp_path, "--n_iters", "0"))
    for name, accs in untrained["eval_datasets"].items():
        assert accs["zero_shot_acc"] == record["eval_datasets"][name]["zero_shot_acc"]
        assert accs["test_acc"] == accs["zero_shot_acc"]

    # --eval_only on the saved adapter gives the trained run's numbers again.
    evaluated = main.main(argv(data_root, tmp_path, *save, "--eval_only"))
    assert evaluated["eval_datasets"] == record["eval_datasets"]
    assert evaluated["total_steps"] == 0


def test_missing_target_stops_the_run_before_training(tmp_path, monkeypatch):
    root = tmp_path / "data"
    trees.build("dtd", root)
    monkeypatch.setattr(main, "train", lambda *a, **k: pytest.fail("trained although a target is missing"))
    with pytest.raises(UserError, match=r"^--eval_datasets eurosat: .*eurosat/2750 not found"):
        main.main(argv(root, tmp_path))


def test_harmonic_mean_and_the_published_rows_agree_with_it():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    for method, (base, new, hm) in PUBLISHED_BASE2NEW.items():
        assert harmonic_mean(base, new) == pytest.approx(hm, abs=0.011), method
    assert extra_evals.base2new_fields(80.0, 60.0, 70.0, 70.0) == {
        "base_acc": 80.0, "new_acc": 60.0, "hm_acc": pytest.approx(68.571, abs=1e-3),
        "zero_shot_base_acc": 70.0, "zero_shot_new_acc": 70.0, "zero_shot_hm_acc": 70.0}


def test_base2new_run_tests_each_half_with_its_own_classifier(tiny_argv, monkeypatch, tmp_path):
    """The colour folder's classes sorted: blue, green | red, yellow. Two classifiers of two classes each."""
    seen = []
    real_accuracy = main.Evaluator.accuracy

    def recording(self, test, desc="test"):
        items = test.items
        seen.append((test.name, len(test.prompts), sorted({i.label for i in items}),
                     sorted({Path(i.source).parent.name for i in items})))
        return real_accuracy(self, test, desc)

    monkeypatch.setattr(main.Evaluator, "accuracy", recording)
    record = main.main(tiny_argv("--protocol", "base2new", "--n_iters", "1", "--save_path", str(tmp_path / "ckpt"),
                                 "--no_zero_shot_cache"))

    # zero-shot and trained, on the base test set (main's) and on the new one (protocols.py)
    assert seen == [
        ("folder", 2, [0, 1], ["blue", "green"]),
        ("folder", 2, [0, 1], ["blue", "green"]),
        ("folder (new classes)", 2, [0, 1], ["red", "yellow"]),
        ("folder (new classes)", 2, [0, 1], ["red", "yellow"]),
    ]
    assert record["protocol"] == "base2new"
    assert record["config"]["protocol"] == "base2new"
    assert record["base_acc"] == record["test_acc"]
    assert record["zero_shot_base_acc"] == record["zero_shot_acc"]
    assert record["hm_acc"] == pytest.approx(harmonic_mean(record["base_acc"], record["new_acc"]))
    assert record["zero_shot_hm_acc"] == pytest.approx(
        harmonic_mean(record["zero_shot_base_acc"], record["zero_shot_new_acc"]))
    assert all(0 <= record[k] <= 100 for k in ("base_acc", "new_acc", "zero_shot_new_acc"))
    subset = json.loads(open(record["subset_file"]).read())
    assert subset["classnames"] == ["blue", "green"]
    assert len(subset["train"]) == 2 * 4
    folder = Path(record["adapter_dir"])
    assert (folder / "run.json").exists()
    assert folder.parent.parent.parent.name == "base2new"
    assert folder.is_relative_to(tmp_path / "ckpt" / "tiny")
    assert folder.name.startswith("lora-")

    again = main.main(tiny_argv("--protocol", "base2new", "--n_iters", "1", "--save_path", str(tmp_path / "ckpt"),
                                "--eval_only"))
    assert (again["base_acc"], again["new_acc"]) == (record["base_acc"], record["new_acc"])


def test_fewshot_run_says_its_protocol(tiny_argv):
    record = main.main(tiny_argv("--n_iters", "0"))
    assert record["protocol"] == "fewshot"
    assert "base_acc" not in record
    assert "eval_datasets" not in record
