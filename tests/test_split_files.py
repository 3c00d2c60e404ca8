"""datasets.split_files: 2SFS's .jsonl files and CoOp/Dassl's shot pickles read as (path, label) lists
relative to the image folder; our draw written in 2SFS's format and read back to the same images."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import sys
import types
from pathlib import Path

import dataset_trees as trees
import pytest

from datasets import build_dataset, dataset_module, write_subset
from qlora_clip.errors import UserError
from datasets.split_files import image_folder_anchors, pick_items, read_split_file, write_2sfs

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
