"""datasets/base2new.py, --protocol base2new's data: CoCoOp's class split, on every dataset's fixture.

The run that evaluates both halves is in test_extra_evals.py, its paths in test_spec.py.
"""
from __future__ import annotations

import json
import math

import dataset_trees as trees
import pytest

from datasets import build_dataset, write_subset
from qlora_clip.data.items import FewShotDataset, Item
from datasets.base2new import base_to_new, relabel, split_classes
from qlora_clip.errors import UserError

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
    assert split.base == tuple(range(base))
    assert split.new == tuple(range(base, n))


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
    assert data.classnames == ["a", "b", "c"]
    assert data.new.classnames == ["d", "e"]
    assert sorted({(i.label, i.classname) for i in data.new.test}) == [(0, "d"), (1, "e")]
    assert sorted({(i.label, i.classname) for i in data.train}) == [(0, "a"), (1, "b"), (2, "c")]
    assert all(f"/{i.classname}/" in i.source for i in data.new.test + data.test + data.train)


def test_subset_file_records_what_trained(tmp_path):
    trees.build("dtd", tmp_path)
    data = build_dataset("dtd", tmp_path, shots=2, seed=1, protocol="base2new")
    write_subset(data, tmp_path / "subset.json")
    record = json.loads((tmp_path / "subset.json").read_text())
    assert record["protocol"] == "base2new"
    assert record["classnames"] == ["banded", "blotchy"]
    assert record["new_classnames"] == ["braided", "bubbly"]
    assert {label for _, label in record["train"]} == {0, 1}
    assert len(record["train"]) == 4
    assert record["new_test_images"] == 2 * trees.PER_CLASS["test"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fewer_than_four_classes_leave_a_half_that_cannot_be_classified(n):
    items = [Item(f"{label}.jpg", label, f"c{label}") for label in range(n)]
    data = FewShotDataset(name="folder", train=items, val=[], test=items, classnames=[i.classname for i in items],
                          template="{}")
    with pytest.raises(UserError, match=rf"--protocol base2new: --dataset folder has {n} class\(es\), .* at least 2 "
                                        "classes .* needs at least 4"):
        base_to_new(data)


def test_four_classes_split_two_and_two():
    items = [Item(f"{label}.jpg", label, f"c{label}") for label in range(4)]
    data = FewShotDataset(name="folder", train=items, val=[], test=items, classnames=[i.classname for i in items],
                          template="{}")
    split = base_to_new(data)
    assert split.classnames == ["c0", "c1"]
    assert split.new.classnames == ["c2", "c3"]


def test_a_three_class_run_is_refused_before_any_checkpoint_is_looked_up(tmp_path, monkeypatch):
    import main
    from qlora_clip.backbones import loading

    trees.write_folder_classes(tmp_path / "three", {"a": 6, "b": 6, "c": 6})
    monkeypatch.setattr(loading, "open_checkpoint", lambda *a: pytest.fail("the checkpoint was looked up"))
    with pytest.raises(UserError, match="2 base and 1 new"):
        main.main(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(tmp_path / "three"),
                   "--protocol", "base2new", "--results_file", str(tmp_path / "results.jsonl")])
