"""datasets.split_files: 2SFS's .jsonl files and CoOp/Dassl's shot pickles read as (path, label) lists
relative to the image folder; our draw written in 2SFS's format and read back to the same images; --split_file:
a dataset built from such a file (its images exactly, refused where it does not fit), and one run through main.py
that trains on exactly the images a 2SFS file lists."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import dataset_trees as trees
import pytest

import main
from datasets import build_dataset, dataset_module, write_subset
from qlora_clip.errors import UserError
from datasets.split_files import (VAL_FROM_FILE, VAL_FROM_TRAIN, VAL_FROM_VAL_SPLIT, image_folder_anchors, pick_items,
                                  read_split_file, split_digest, write_2sfs)

DTD = image_folder_anchors(dataset_module("dtd"))


def relative(items, image_dir) -> list[tuple[str, int]]:
    return [(os.path.relpath(item.source, image_dir), item.label) for item in items]


def datum(path: str, label: int, classname: str) -> dict:
    return {"_impath": path, "_label": label, "_domain": 0, "_classname": classname}


def test_our_draw_written_in_2sfs_format_reads_back_to_the_same_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = trees.build("dtd", tmp_path / "DATA")
    data = build_dataset("dtd", "DATA", shots=2, seed=3)  # a relative root, as most runs give it
    write_subset(data, tmp_path / "subsets/dtd_2shots_seed3.json")
    train_file, val_file = write_2sfs(tmp_path / "subsets/dtd_2shots_seed3.json", tmp_path / "split_fewshot")
    assert (train_file.name, val_file.name) == ("shot_2-seed_3_train.jsonl", "shot_2-seed_3_val.jsonl")
    first = json.loads(train_file.read_text().splitlines()[0])
    assert sorted(first) == ["_classname", "_domain", "_impath", "_label"]
    assert os.path.isabs(first["_impath"])
    assert os.path.isfile(first["_impath"])  # what 2SFS opens as it is

    split = read_split_file(val_file, DTD)  # either part names the pair
    assert (split.format, split.source, split.shots, split.seed) == ("2sfs", train_file, 2, 3)
    assert split.pairs("train") == relative(data.train, tree.image_dir)
    assert split.pairs("val") == relative(data.val, tree.image_dir)
    assert [entry.classname for entry in split.train] == [item.classname for item in data.train]
    # The subset file itself reads to the same lists, and the entries pick out the very items drawn.
    ours = read_split_file(tmp_path / "subsets/dtd_2shots_seed3.json", DTD)
    assert (ours.format, ours.pairs("train"), ours.pairs("val")) == ("qlora-clip", split.pairs("train"),
                                                                       split.pairs("val"))
    full = dataset_module("dtd").load(Path("DATA"))
    assert pick_items(split.train, full.train + full.val, "DATA/dtd/images", "split") == data.train
    assert pick_items(split.val, full.train + full.val, "DATA/dtd/images", "split") == data.val


def test_2sfs_files_written_on_another_machine_read_relative_to_the_image_folder(tmp_path):
    folder = tmp_path / "split_fewshot"
    folder.mkdir()
    (folder / "shot_1-seed_2_train.jsonl").write_text("\n".join(json.dumps(d) for d in [
        datum("/home/someone/DATA/dtd/images/banded/banded_0002.jpg", 0, "banded"),
        datum("/mnt/data/DTD/images/blotchy/blotchy_0010.jpg", 1, "blotchy"),  # CLIP-LoRA's folder name
    ]) + "\n")
    split = read_split_file(folder / "shot_1-seed_2_train.jsonl", DTD)
    assert split.pairs("train") == [("banded/banded_0002.jpg", 0), ("blotchy/blotchy_0010.jpg", 1)]
    assert split.val is None
    assert split.pairs("val") == []  # ImageNet's files have no val part

    cars = image_folder_anchors(dataset_module("stanford_cars"))  # paths relative to the dataset folder
    (folder / "shot_1-seed_1_train.jsonl").write_text(json.dumps(datum("/x/stanford_cars/cars_test/00001.jpg", 4, "c")))
    assert read_split_file(folder / "shot_1-seed_1_train.jsonl", cars).pairs("train") == [("cars_test/00001.jpg", 4)]
    imagenet = image_folder_anchors(dataset_module("imagenet"))  # CoOp's images/ level or CLIP-LoRA's none
    (folder / "shot_1-seed_3_train.jsonl").write_text("\n".join(json.dumps(d) for d in [
        datum("/x/imagenet/images/train/n01440764/a.JPEG", 0, "tench"),
        datum("/y/imagenet/train/n01440764/b.JPEG", 0, "tench")]))
    assert read_split_file(folder / "shot_1-seed_3_train.jsonl", imagenet).pairs("train") == [
        ("train/n01440764/a.JPEG", 0), ("train/n01440764/b.JPEG", 0)]

    (folder / "shot_4-seed_1_train.jsonl").write_text(json.dumps(datum("/x/eurosat/2750/Forest/1.jpg", 1, "Forest")))
    with pytest.raises(UserError, match=r"shot_4-seed_1_train\.jsonl:1: image path .* not under the dataset's image"):
        read_split_file(folder / "shot_4-seed_1_train.jsonl", DTD)
    (folder / "shot_8-seed_1_train.jsonl").write_text('{"_impath": "a.jpg", "_label": "0"}\n')
    with pytest.raises(UserError, match=r"shot_8-seed_1_train\.jsonl:1: expected a Datum's fields"):
        read_split_file(folder / "shot_8-seed_1_train.jsonl", DTD)


def dassl_pickle(monkeypatch, data_of) -> bytes:
    """A pickle as CoOp writes one, with Dassl's Datum class (a stand-in module, removed afterwards)."""
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    class Datum:
        def __init__(self, impath="", label=0, domain=0, classname=""):
            self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

    Datum.__module__, Datum.__qualname__ = module.__name__, "Datum"
    module.Datum = Datum
    with monkeypatch.context() as patch:
        for parent in ("dassl", "dassl.data", "dassl.data.datasets"):
            patch.setitem(sys.modules, parent, types.ModuleType(parent))
        patch.setitem(sys.modules, module.__name__, module)
        return pickle.dumps(data_of(Datum), protocol=pickle.HIGHEST_PROTOCOL)


def test_a_coop_shot_pickle_is_read_without_running_code_from_it(tmp_path, monkeypatch):
    path = tmp_path / "shot_16-seed_1.pkl"
    path.write_bytes(dassl_pickle(monkeypatch, lambda Datum: {
        "train": [Datum("/home/kaiyang/data/dtd/images/banded/banded_0002.jpg", 0, 0, "banded")],
        "val": [Datum("/home/kaiyang/data/dtd/images/braided/braided_0100.jpg", 2, 0, "braided")]}))
    assert "dassl.data.datasets.base_dataset" not in sys.modules  # read without Dassl installed
    split = read_split_file(path, DTD)
    assert (split.format, split.shots, split.seed) == ("dassl", 16, 1)
    assert split.pairs("train") == [("banded/banded_0002.jpg", 0)]
    assert split.pairs("val") == [("braided/braided_0100.jpg", 2)]
    assert split.val[0].classname == "braided"

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return builtins.open, (str(marker), "w")

    evil = tmp_path / "shot_1-seed_1.pkl"
    evil.write_bytes(pickle.dumps({"train": [Payload()]}))
    with pytest.raises(UserError, match=r"refers to io\.open; a CoOp/Dassl shot file holds only"):
        read_split_file(evil, DTD)
    assert not marker.exists()


def test_a_base2new_or_fashion_mnist_draw_is_not_exported(tmp_path):
    record = {"dataset": "dtd", "shots": 1, "seed": 1, "protocol": "base2new", "classnames": ["a"],
              "train": [], "val": []}
    (tmp_path / "b2n.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="relabelled"):
        write_2sfs(tmp_path / "b2n.json", tmp_path / "out")
    (tmp_path / "fm.json").write_text(json.dumps({**record, "protocol": "fewshot", "dataset": "fashion_mnist"}))
    with pytest.raises(UserError, match="indices"):
        write_2sfs(tmp_path / "fm.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- --split_file: training on a published split --------------------------------------------------------------

@pytest.fixture
def dtd_tree(tmp_path) -> trees.Tree:
    return trees.build("dtd", tmp_path / "DATA")


def test_a_2sfs_file_gives_exactly_its_images_with_the_datasets_labels_and_names(dtd_tree, tmp_path):
    train, val = trees.hand_picked(dtd_tree, "train", 2), trees.hand_picked(dtd_tree, "val", 1)
    path = trees.write_2sfs_pair(tmp_path / "split_fewshot", "shot_2-seed_3", train, val, dtd_tree.classnames)
    data = build_dataset("dtd", dtd_tree.root, shots=2, seed=3, split_file=path)
    assert relative(data.train, dtd_tree.image_dir) == train
    assert relative(data.val, dtd_tree.image_dir) == val
    assert relative(data.train, dtd_tree.image_dir) != relative(
        build_dataset("dtd", dtd_tree.root, shots=2, seed=3).train, dtd_tree.image_dir)  # not our draw
    assert [item.classname for item in data.train] == [dtd_tree.classnames[label] for _, label in train]
    assert data.split_file == {"path": str(path), "format": "2sfs", "files": [str(path), str(path).replace(
        "_train.jsonl", "_val.jsonl")], "digest": split_digest(read_split_file(path, DTD)), "val": VAL_FROM_FILE}
    assert data.test == build_dataset("dtd", dtd_tree.root, shots=2, seed=3).test  # the test set is the dataset's


@pytest.mark.parametrize("damage, says", [
    ("label", r"entry 0 gives .* label 0, the dataset's split gives 3"),
    ("val image in train", r"train list: entry 0 names .*, which is not an image of the dataset's split"),
    ("class missing", r"no train image of 1 of the dataset's 4 classes \('banded'\)"),
    ("other shots", r"the file is the 2-shot draw of seed 3, .*give --shots 2"),
    ("other seed", r"the file is the 2-shot draw of seed 3, .*give --seed 3"),
    ("fewer per class", r"its largest class has 1 train image\(s\), so it is a 1-shot draw; give --shots 1"),
])
def test_a_split_file_that_does_not_fit_the_dataset_or_the_run_is_refused_naming_the_flag(
        dtd_tree, tmp_path, damage, says):
    train, val = trees.hand_picked(dtd_tree, "train", 2), trees.hand_picked(dtd_tree, "val", 1)
    shots, seed, stem = 2, 3, "shot_2-seed_3"
    if damage == "label":  # two images of different classes swap labels: every class still has two
        (first, a), (last, b) = train[0], train[-1]
        train = [(first, b)] + train[1:-1] + [(last, a)]
    elif damage == "val image in train":
        train = [val[0]] + train[1:]
    elif damage == "class missing":
        train = [pair for pair in train if pair[1] != 0]
    elif damage == "other shots":
        shots = 4
    elif damage == "other seed":
        seed = 1
    elif damage == "fewer per class":
        train, stem = trees.hand_picked(dtd_tree, "train", 1), "renamed"
    path = trees.write_2sfs_pair(tmp_path / "split_fewshot", stem, train, val, dtd_tree.classnames)
    with pytest.raises(UserError, match=rf"^--split_file {re.escape(str(path))}.*{says}"):
        build_dataset("dtd", dtd_tree.root, shots=shots, seed=seed, split_file=path)


def test_base_to_novel_keeps_the_base_classes_of_the_files_draw(dtd_tree, tmp_path):
    train, val = trees.hand_picked(dtd_tree, "train", 2), trees.hand_picked(dtd_tree, "val", 1)
    path = trees.write_2sfs_pair(tmp_path / "split_fewshot", "shot_2-seed_3", train, val, dtd_tree.classnames)
    data = build_dataset("dtd", dtd_tree.root, shots=2, seed=3, protocol="base2new", split_file=path)
    assert relative(data.train, dtd_tree.image_dir) == [pair for pair in train if pair[1] < 2]  # base: labels 0, 1
    assert data.split_file["format"] == "2sfs"


def test_without_a_val_list_val_is_drawn_as_our_own_or_from_the_unlisted_train_images(dtd_tree, tmp_path, monkeypatch):
    # DTD has a val split: the val images our own draw of the seed takes (it draws val first).
    path = trees.write_2sfs_pair(tmp_path / "dtd", "shot_2-seed_3", trees.hand_picked(dtd_tree, "train", 2), None,
                           dtd_tree.classnames)
    data = build_dataset("dtd", dtd_tree.root, shots=2, seed=3, split_file=path)
    assert data.val == build_dataset("dtd", dtd_tree.root, shots=2, seed=3).val
    assert data.split_file["val"] == VAL_FROM_VAL_SPLIT
    assert data.split_file["files"] == [str(path)]

    # ImageNet has none, and CoOp's shot pickle of it has no "val": min(shots, 4) per class from the train images
    # the file does not list, so the two never share an image.
    imagenet = trees.build("imagenet", tmp_path / "IMAGENET")
    listed = [(f"/home/kaiyang/data/imagenet/images/train/{wnid}/{wnid}_{n}.JPEG", label, name)
              for label, (wnid, name) in enumerate(trees.IMAGENET_CLASSES.items()) for n in (1, 4)]
    pickle_path = tmp_path / "imagenet" / "split_fewshot" / "shot_2-seed_1.pkl"
    pickle_path.parent.mkdir(parents=True)
    pickle_path.write_bytes(dassl_pickle(monkeypatch, lambda Datum: {"train": [Datum(*entry[:2], 0, entry[2])
                                                                               for entry in listed]}))
    data = build_dataset("imagenet", imagenet.root, shots=2, seed=1, split_file=pickle_path)
    assert relative(data.train, imagenet.image_dir.parent) == [
        (path.split("/images/", 1)[1], label) for path, label, _ in listed]
    assert sorted(item.label for item in data.val) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not {item.source for item in data.val} & {item.source for item in data.train}
    assert data.split_file["format"] == "dassl"
    assert data.split_file["val"] == VAL_FROM_TRAIN


def test_a_runs_subset_file_is_a_split_file_for_its_own_folder_too(tmp_path):
    trees.write_folder_classes(tmp_path / "mine", {"cat": 10, "dog": 10})
    ours = build_dataset("folder", tmp_path / "mine", shots=2, seed=5)
    write_subset(ours, tmp_path / "subsets" / "mine.json")
    again = build_dataset("folder", tmp_path / "mine", shots=2, seed=5, split_file=tmp_path / "subsets" / "mine.json")
    assert (again.train, again.val) == (ours.train, ours.val)
    assert again.split_file["format"] == "qlora-clip"

    b2n = {**json.loads((tmp_path / "subsets" / "mine.json").read_text()), "protocol": "base2new"}
    (tmp_path / "subsets" / "b2n.json").write_text(json.dumps(b2n))
    with pytest.raises(UserError, match=r"--split_file .*b2n\.json: a base2new draw holds the base classes only"):
        read_split_file(tmp_path / "subsets" / "b2n.json", ())


# --- one run through main.py on a 2SFS file -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def published_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("published")
    tree = trees.build("dtd", tmp / "DATA")
    train, val = trees.hand_picked(tree, "train", 2), trees.hand_picked(tree, "val", 1)
    path = trees.write_2sfs_pair(tmp / "split_fewshot", "shot_2-seed_3", train, val, tree.classnames)
    record = main.main(["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tree.root), "--shots", "2",
                        "--seed", "3", "--n_iters", "1", "--batch_size", "4", "--split_file", str(path),
                        "--results_file", str(tmp / "results" / "results.jsonl"), "--eval_cache_dir", ""])
    return tree, path, train, val, record


def test_a_run_on_a_2sfs_file_trains_on_exactly_the_listed_images(published_run):
    tree, path, train, val, record = published_run
    subset = json.loads(Path(record["subset_file"]).read_text())
    assert subset["train"] == [[str(tree.image_dir / p), label] for p, label in train]
    assert subset["val"] == [[str(tree.image_dir / p), label] for p, label in val]


def test_the_runs_line_and_subset_file_record_the_split_file(published_run):
    tree, path, train, val, record = published_run
    assert record["config"]["split_file"] == str(path)
    assert record["split_file"]["format"] == "2sfs"
    assert record["split_file"]["digest"] == record["config"]["split_file_digest"]
    assert record["split_file"]["val"] == VAL_FROM_FILE
    assert re.fullmatch(r"dtd_2shots_seed3_split-[0-9a-f]{8}\.json", Path(record["subset_file"]).name)
    assert json.loads(Path(record["subset_file"]).read_text())["split_file"] == record["split_file"]
