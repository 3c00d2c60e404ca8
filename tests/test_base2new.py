"""--protocol base2new: CoCoOp's class split, on every dataset's fixture, and end to end on the tiny CLIP."""
from __future__ import annotations

import json
import math
from pathlib import Path

import dataset_trees as trees
import pytest

import main
from datasets import build_dataset, write_subset
from datasets.base import FewShotDataset, Item
from datasets.base2new import base_to_new, relabel, split_classes
from metrics import harmonic_mean
from qlora_clip import extra_evals
from qlora_clip.errors import UserError
from qlora_clip.paper import PUBLISHED_BASE2NEW
from run_utils import parse_args, run_spec

# Classes of each benchmark and the base / new counts the literature's tables use.
PUBLISHED_SPLITS = {
    "imagenet": (1000, 500, 500), "caltech101": (100, 50, 50), "oxford_pets": (37, 19, 18),
    "stanford_cars": (196, 98, 98), "oxford_flowers": (102, 51, 51), "food101": (101, 51, 50),
    "fgvc": (100, 50, 50), "sun397": (397, 199, 198), "dtd": (47, 24, 23), "eurosat": (10, 5, 5),
    "ucf101": (101, 51, 50),
}


# --- the rule --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PUBLISHED_SPLITS)
def test_split_rule_gives_the_published_base_and_new_counts(name):
    n, base, new = PUBLISHED_SPLITS[name]
    split = split_classes(range(n))
    assert (len(split.base), len(split.new)) == (base, new)
    assert split.base == tuple(range(base)) and split.new == tuple(range(base, n))


def test_split_sorts_distinct_labels_and_takes_the_larger_half_first():
    split = split_classes([9, 1, 5, 1, 3, 7, 9])
    assert (split.base, split.new) == ((1, 3, 5), (7, 9))


def test_relabel_keeps_order_and_numbers_each_half_from_zero():
    items = [Item(f"{i}.jpg", label, f"c{label}") for i, label in enumerate([4, 0, 3, 1, 4, 2])]
    assert [(i.source, i.label, i.classname) for i in relabel(items, (3, 4))] == [
        ("0.jpg", 1, "c4"), ("2.jpg", 0, "c3"), ("4.jpg", 1, "c4")]


# --- every dataset's fixture -----------------------------------------------------------------------

@pytest.mark.parametrize("name", trees.BENCHMARKS)
def test_base2new_restricts_the_same_draw_to_the_base_classes(tmp_path, name):
    tree = trees.build(name, tmp_path)
    n = len(tree.classnames)
    base_n = math.ceil(n / 2)
    everything = build_dataset(name, tmp_path, shots=2, seed=1)
    data = build_dataset(name, tmp_path, shots=2, seed=1, protocol="base2new")

    assert data.protocol == "base2new"
    assert data.classnames == tree.classnames[:base_n]
    assert data.new.classnames == tree.classnames[base_n:]
    # Drawn over all classes first, then filtered: the base classes' images of the few-shot draw, in order.
    for part in ("train", "val", "test"):
        kept = [(i.source, i.label, i.classname) for i in getattr(everything, part) if i.label < base_n]
        assert [(i.source, i.label, i.classname) for i in getattr(data, part)] == kept
    assert len(data.train) == base_n * 2
    # The new classes: test images only, relabelled from 0, named as before.
    assert [(i.source, i.label + base_n, i.classname) for i in data.new.test] == [
        (i.source, i.label, i.classname) for i in everything.test if i.label >= base_n]
    assert {i.label for i in data.new.test} == set(range(n - base_n))
    assert all(data.new.classnames[i.label] == i.classname for i in data.new.test)
    assert data.new.prompts() == [f"a photo of a {c.replace('_', ' ')}." for c in tree.classnames[base_n:]]


def test_new_classes_are_relabelled_from_zero(tmp_path):
    trees.write_folder_classes(tmp_path, {"e": 10, "a": 10, "d": 10, "b": 10, "c": 10})
    data = build_dataset("folder", tmp_path, shots=2, seed=3, protocol="base2new")
    assert data.classnames == ["a", "b", "c"] and data.new.classnames == ["d", "e"]
    assert sorted({(i.label, i.classname) for i in data.new.test}) == [(0, "d"), (1, "e")]
    assert sorted({(i.label, i.classname) for i in data.train}) == [(0, "a"), (1, "b"), (2, "c")]
    assert all(f"/{i.classname}/" in i.source for i in data.new.test + data.test + data.train)


def test_subset_file_records_what_trained(tmp_path):
    trees.build("dtd", tmp_path)
    data = build_dataset("dtd", tmp_path, shots=2, seed=1, protocol="base2new")
    write_subset(data, tmp_path / "subset.json")
    record = json.loads((tmp_path / "subset.json").read_text())
    assert record["protocol"] == "base2new"
    assert record["classnames"] == ["banded", "blotchy"] and record["new_classnames"] == ["braided"]
    assert {label for _, label in record["train"]} == {0, 1} and len(record["train"]) == 4
    assert record["new_test_images"] == trees.PER_CLASS["test"]


def test_one_class_cannot_be_split():
    items = [Item("a.jpg", 0, "cat")]
    data = FewShotDataset(name="folder", train=items, val=[], test=items, classnames=["cat"], template="{}")
    with pytest.raises(UserError, match="--protocol base2new: .* at least two"):
        base_to_new(data)


def test_base2new_runs_keep_their_own_adapter_and_subset_paths():
    fewshot = parse_args(["--dataset", "dtd", "--save_path", "ckpt", "--results_file", "r/x.jsonl"])
    base2new = parse_args(["--dataset", "dtd", "--save_path", "ckpt", "--results_file", "r/x.jsonl",
                           "--protocol", "base2new"])
    assert str(run_spec(fewshot).adapter_dir) == "ckpt/ViT-B-16/dtd/16shots/seed1/lora"
    assert str(run_spec(base2new).adapter_dir) == "ckpt/ViT-B-16/dtd/base2new/16shots/seed1/lora"
    assert str(run_spec(fewshot).subset_path) == "r/subsets/dtd_16shots_seed1.json"
    assert str(run_spec(base2new).subset_path) == "r/subsets/dtd_base2new_16shots_seed1.json"


# --- harmonic mean ---------------------------------------------------------------------------------

def test_harmonic_mean_and_the_published_rows_agree_with_it():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    for method, (base, new, hm) in PUBLISHED_BASE2NEW.items():
        assert harmonic_mean(base, new) == pytest.approx(hm, abs=0.011), method
    assert extra_evals.base2new_fields(80.0, 60.0, 70.0, 70.0) == {
        "base_acc": 80.0, "new_acc": 60.0, "hm_acc": pytest.approx(68.571, abs=1e-3),
        "zero_shot_base_acc": 70.0, "zero_shot_new_acc": 70.0, "zero_shot_hm_acc": 70.0}


# --- end to end on the tiny CLIP -------------------------------------------------------------------

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
    assert record["protocol"] == "base2new" and record["config"]["protocol"] == "base2new"
    assert record["base_acc"] == record["test_acc"] and record["zero_shot_base_acc"] == record["zero_shot_acc"]
    assert record["hm_acc"] == pytest.approx(harmonic_mean(record["base_acc"], record["new_acc"]))
    assert record["zero_shot_hm_acc"] == pytest.approx(
        harmonic_mean(record["zero_shot_base_acc"], record["zero_shot_new_acc"]))
    assert all(0 <= record[k] <= 100 for k in ("base_acc", "new_acc", "zero_shot_new_acc"))
    subset = json.loads(open(record["subset_file"]).read())
    assert subset["classnames"] == ["blue", "green"] and len(subset["train"]) == 2 * 4
    folder = Path(record["adapter_dir"])
    assert (folder / "run.json").exists() and folder.parent.parent.parent.name == "base2new"
    assert folder.is_relative_to(tmp_path / "ckpt" / "tiny") and folder.name.startswith("lora-")

    again = main.main(tiny_argv("--protocol", "base2new", "--n_iters", "1", "--save_path", str(tmp_path / "ckpt"),
                                "--eval_only"))
    assert (again["base_acc"], again["new_acc"]) == (record["base_acc"], record["new_acc"])


def test_fewshot_run_says_its_protocol(tiny_argv):
    record = main.main(tiny_argv("--n_iters", "0"))
    assert record["protocol"] == "fewshot" and "base_acc" not in record and "eval_datasets" not in record
