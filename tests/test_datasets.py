"""The dataset loaders, on miniature trees in the real on-disk formats (tests/dataset_trees.py)."""
from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path

import dataset_trees as trees
import pytest
import torch
from torchvision.datasets import ImageFolder

import main
from datasets import DATASET_NAMES, build_dataset, dataset_module, write_subset
from qlora_clip.errors import UserError
from qlora_clip.inputs.train_images import decode_all

REPO = Path(__file__).resolve().parent.parent


def relative(items, base: Path) -> list[tuple[str, int]]:
    return [(os.path.relpath(item.source, base), item.label) for item in items]


def protocol_draw(train: list, val: list, shots: int, seed: int) -> tuple[list, list]:
    """docs/protocol.md's sampling rule written out on plain (path, label) pairs with the global generator."""
    def per_class(entries: list, k: int) -> list:
        groups: dict[int, list] = {}
        for entry in entries:
            groups.setdefault(entry[1], []).append(entry)
        drawn = []
        for group in groups.values():
            drawn += random.sample(group, k) if len(group) >= k else random.choices(group, k=k)
        return drawn

    random.seed(seed)
    few_val = per_class(val, min(shots, 4))
    few_train = per_class(train, shots)
    return few_train, few_val


# --- every benchmark, both folder conventions ----------------------------------------------------

@pytest.mark.parametrize("convention", trees.CONVENTIONS)
@pytest.mark.parametrize("name", trees.BENCHMARKS)
def test_benchmark_builds_from_its_real_format(tmp_path, name, convention):
    tree = trees.build(name, tmp_path, convention)
    shots = 2
    data = build_dataset(name, tmp_path, shots=shots, seed=1)
    n = len(tree.classnames)

    assert data.name == name
    assert data.classnames == tree.classnames
    assert len(data.train) == n * shots
    assert len(data.val) == n * min(shots, 4)
    assert len(data.test) == tree.counts["test"]
    for part in (data.train, data.val, data.test):
        assert {item.label for item in part} == set(range(n))
        assert all(data.classnames[item.label] == item.classname for item in part)
        assert all(Path(item.source).is_file() for item in part)
    # Each class gets exactly `shots` train and min(shots, 4) val images.
    assert sorted(item.label for item in data.train) == sorted(list(range(n)) * shots)

    assert data.template == "a photo of a {}."
    assert data.prompts()[0] == "a photo of a {}.".format(tree.classnames[0].replace("_", " "))
    coop = build_dataset(name, tmp_path, shots=shots, seed=1, template="dataset")
    assert coop.template == trees.COOP_TEMPLATES[name]
    assert relative(coop.train, tmp_path) == relative(data.train, tmp_path)


@pytest.mark.parametrize("name", trees.BENCHMARKS)
def test_both_folder_conventions_draw_the_same_images(tmp_path, name):
    drawn = {}
    for convention in trees.CONVENTIONS:
        tree = trees.build(name, tmp_path / convention, convention)
        data = build_dataset(name, tmp_path / convention, shots=3, seed=2)
        drawn[convention] = (relative(data.train, tree.image_dir), relative(data.val, tree.image_dir),
                             relative(data.test, tree.image_dir), data.classnames)
    assert drawn["coop"] == drawn["clip-lora"]


def test_class_name_fixes_reach_the_prompts(tmp_path):
    trees.build("ucf101", tmp_path)
    trees.build("eurosat", tmp_path)
    trees.build("oxford_pets", tmp_path)
    ucf = build_dataset("ucf101", tmp_path, shots=1, seed=1, template="dataset")
    assert ucf.prompts()[0] == "a photo of a person doing Apply Eye Makeup."
    eurosat = build_dataset("eurosat", tmp_path, shots=1, seed=1, template="dataset")
    assert eurosat.prompts()[2] == "a centered satellite photo of Sea or Lake."
    pets = build_dataset("oxford_pets", tmp_path, shots=1, seed=1, template="dataset")
    assert pets.prompts()[1] == "a photo of a american bulldog, a type of pet."
    assert pets.classnames[2] == "bengal"


def test_shots_drawn_is_the_fewest_distinct_train_images_of_any_class(tmp_path):
    # Auto split: half of each class trains, so "b" has 3 train images (of 6) and 4 shots repeat one of them.
    trees.write_folder_classes(tmp_path, {"a": 20, "b": 6, "c": 20})
    assert build_dataset("folder", tmp_path, shots=4, seed=1).shots_drawn == 3
    assert build_dataset("folder", tmp_path, shots=3, seed=1).shots_drawn == 3
    assert build_dataset("folder", tmp_path, shots=2, seed=1).shots_drawn == 2


def test_fgvc_archive_folder_works_unrenamed(tmp_path):
    tree = trees.build_fgvc(tmp_path, "fgvc-aircraft-2013b/data")
    data = build_dataset("fgvc", tmp_path, shots=1, seed=1)
    assert data.classnames == tree.classnames == ["707-320", "727-200", "F-16A/B", "Falcon 2000"]


def test_every_dataset_has_a_datasets_md_section():
    text = (REPO / "DATASETS.md").read_text()
    headings = set(re.findall(r"^##+ (\S+)\s*$", text, flags=re.M))
    assert set(DATASET_NAMES) <= headings
    assert (set(trees.BENCHMARKS) | set(trees.VARIANTS) | set(trees.OOD_SETS) | {"fashion_mnist", "folder"}
            == set(DATASET_NAMES))


# --- the draw: same as the protocol, deterministic -----------------------------------------------

@pytest.mark.parametrize("name", ["dtd", "sun397", "fgvc"])
@pytest.mark.parametrize("shots", [1, 2, 4])
def test_draw_is_the_protocols_val_first_then_train(tmp_path, name, shots):
    tree = trees.build(name, tmp_path)
    for seed in (1, 2, 3):
        data = build_dataset(name, tmp_path, shots=shots, seed=seed)
        train, val = protocol_draw(tree.entries["train"], tree.entries["val"], shots, seed)
        assert relative(data.val, tree.image_dir) == val
        assert relative(data.train, tree.image_dir) == train
        assert relative(data.test, tree.image_dir) == tree.entries["test"]  # whole, in file order


def test_val_is_drawn_before_train_from_one_generator(tmp_path):
    tree = trees.build("dtd", tmp_path)
    data = build_dataset("dtd", tmp_path, shots=2, seed=1)
    random.seed(1)
    train_first = [random.sample([e for e in tree.entries["train"] if e[1] == label], 2)
                   for label in dict.fromkeys(label for _, label in tree.entries["train"])]
    assert relative(data.train, tree.image_dir) != [e for group in train_first for e in group]


def test_imagenet_draws_train_and_val_in_one_sample_per_class(tmp_path):
    tree = trees.build_imagenet(tmp_path)
    for shots in (1, 2, 4, 5):
        n_val = min(4, shots)
        for seed in (1, 2):
            data = build_dataset("imagenet", tmp_path, shots=shots, seed=seed)
            # What CLIP-LoRA samples from: torchvision's ImageFolder listing of train/.
            folder = ImageFolder(str(tree.image_dir))
            random.seed(seed)
            expected_train, expected_val = [], []
            for label in range(len(folder.classes)):
                drawn = random.sample([s for s in folder.samples if s[1] == label], shots + n_val)
                expected_train += drawn[:shots]
                expected_val += drawn[shots:]
            assert [(i.source, i.label) for i in data.train] == expected_train
            assert [(i.source, i.label) for i in data.val] == expected_val
            assert not {i.source for i in data.train} & {i.source for i in data.val}
    assert len(data.test) == tree.counts["test"]
    assert all("/val/" in item.source for item in data.test)
    assert all(item.source.endswith(".JPEG") for item in data.train)  # readme.txt is not an image


def test_same_seed_same_subsets_other_seed_other_subsets(tmp_path):
    trees.build("food101", tmp_path)
    first = build_dataset("food101", tmp_path, shots=2, seed=1)
    again = build_dataset("food101", tmp_path, shots=2, seed=1)
    other = build_dataset("food101", tmp_path, shots=2, seed=2)
    assert (first.train, first.val) == (again.train, again.val)
    assert first.train != other.train
    assert first.test == other.test


def test_shots_above_a_class_pool_repeat_images_and_say_so(tmp_path, caplog):
    tree = trees.build("dtd", tmp_path)
    shots = trees.PER_CLASS["train"] + 2
    with caplog.at_level(logging.WARNING):
        data = build_dataset("dtd", tmp_path, shots=shots, seed=1)
    assert len(data.train) == shots * len(tree.classnames)
    assert "with repetition" in caplog.text
    assert f"fewer than {shots} train" in caplog.text
    train, val = protocol_draw(tree.entries["train"], tree.entries["val"], shots, 1)
    assert relative(data.train, tree.image_dir) == train
    assert relative(data.val, tree.image_dir) == val


def test_write_subset_records_the_draw(tmp_path):
    trees.build("caltech101", tmp_path)
    data = build_dataset("caltech101", tmp_path, shots=2, seed=3, template="dataset")
    out = tmp_path / "results" / "subsets" / "caltech101_2shots_seed3.json"
    write_subset(data, out)
    record = json.loads(out.read_text())
    assert (record["dataset"], record["shots"], record["seed"]) == ("caltech101", 2, 3)
    assert record["classnames"] == data.classnames
    assert record["train"] == [[item.source, item.label] for item in data.train]
    assert record["val"] == [[item.source, item.label] for item in data.val]
    assert record["test_images"] == len(data.test)


def test_images_load_as_rgb_pixels(tmp_path):
    trees.build("eurosat", tmp_path)
    data = build_dataset("eurosat", tmp_path, shots=1, seed=1)
    assert data.load_image(data.train[0].source).mode == "RGB"
    images = decode_all([item.source for item in data.train], data.load_image, budget_gb=1)
    assert images[0].shape == (8, 8, 3)
    assert images[0].dtype == torch.uint8


# --- errors that say what to do ------------------------------------------------------------------

def test_missing_dataset_folder_names_both_conventions_and_the_docs(tmp_path):
    with pytest.raises(UserError) as err:
        build_dataset("dtd", tmp_path, shots=1, seed=1)
    message = str(err.value)
    assert str(tmp_path / "dtd" / "images") in message
    assert str(tmp_path / "DTD" / "images") in message
    assert "DATASETS.md#dtd" in message


def test_missing_imagenet_names_both_layouts(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "imagenet" / "train"))) as err:
        build_dataset("imagenet", tmp_path, shots=1, seed=1)
    assert "DATASETS.md#imagenet" in str(err.value)


def test_missing_split_file_names_its_path(tmp_path):
    tree = trees.build("oxford_flowers", tmp_path)
    tree.split_file.unlink()
    with pytest.raises(UserError, match=re.escape(str(tree.split_file))) as err:
        build_dataset("oxford_flowers", tmp_path, shots=1, seed=1)
    assert "DATASETS.md#oxford_flowers" in str(err.value)


@pytest.mark.parametrize("name", ["stanford_cars", "fgvc"])
def test_image_listed_but_missing_is_named_when_building(tmp_path, name):
    tree = trees.build(name, tmp_path)
    missing = tree.image_dir / tree.entries["test"][-1][0]
    missing.unlink()
    with pytest.raises(UserError, match=re.escape(str(missing))):
        build_dataset(name, tmp_path, shots=1, seed=1)


def test_fgvc_variant_missing_from_variants_txt_names_the_line(tmp_path):
    trees.build("fgvc", tmp_path)
    with open(tmp_path / "fgvc_aircraft" / "images_variant_val.txt", "a") as f:
        f.write("1234567 Spitfire\n")
    with pytest.raises(UserError, match=r"images_variant_val\.txt:\d+: variant 'Spitfire'"):
        build_dataset("fgvc", tmp_path, shots=1, seed=1)


def test_imagenet_folder_without_class_name_is_named(tmp_path):
    trees.build_imagenet(tmp_path)
    trees._write_image(tmp_path / "imagenet" / "images" / "train" / "n09999999" / "a.JPEG", 0)
    with pytest.raises(UserError, match="n09999999"):
        build_dataset("imagenet", tmp_path, shots=1, seed=1)


def test_damaged_split_json_is_reported(tmp_path):
    tree = trees.build("dtd", tmp_path)
    tree.split_file.write_text(json.dumps({"train": [["a.jpg", 0]], "val": [], "test": []}))
    with pytest.raises(UserError, match=r"train\[0\]"):
        build_dataset("dtd", tmp_path, shots=1, seed=1)


def test_unknown_dataset_and_template(tmp_path):
    with pytest.raises(UserError, match="ucf101"):
        build_dataset("ucf-101", tmp_path, shots=1, seed=1)
    trees.build("dtd", tmp_path)
    with pytest.raises(UserError, match="--template"):
        build_dataset("dtd", tmp_path, shots=1, seed=1, template="coop")


# --- --dataset folder ----------------------------------------------------------------------------

def test_folder_auto_split_is_50_20_30_and_fixed(tmp_path):
    trees.write_folder_classes(tmp_path, {"cat": 10, "dog": 20})
    a = build_dataset("folder", tmp_path, shots=2, seed=1)
    b = build_dataset("folder", tmp_path, shots=2, seed=2)
    assert a.classnames == ["cat", "dog"]
    assert len(a.test) == 3 + 6
    assert a.test == b.test  # the split does not depend on the run's seed
    split = dataset_module("folder").load(tmp_path)
    assert (len(split.train), len(split.val), len(split.test)) == (5 + 10, 2 + 4, 3 + 6)
    sources = [item.source for part in (split.train, split.val, split.test) for item in part]
    assert len(set(sources)) == 30


def test_folder_explicit_split_and_classnames_txt(tmp_path):
    for part, count in (("train", 4), ("val", 2), ("test", 3)):
        trees.write_folder_classes(tmp_path / part, {"n01": count, "n02": count})
    (tmp_path / "classnames.txt").write_text("n01 red fox\nn02\tarctic fox\n")
    data = build_dataset("folder", tmp_path, shots=2, seed=1)
    assert data.classnames == ["red fox", "arctic fox"]
    assert data.prompts() == ["a photo of a red fox.", "a photo of a arctic fox."]
    assert len(data.test) == 6
    assert all("/test/" in item.source for item in data.test)
    assert all("/val/" in item.source for item in data.val)


def test_folder_without_val_draws_val_from_train_disjointly(tmp_path):
    for part in ("train", "test"):
        trees.write_folder_classes(tmp_path / part, {"a": 6, "b": 6})
    data = build_dataset("folder", tmp_path, shots=2, seed=1)
    assert len(data.train) == 4
    assert len(data.val) == 4
    assert not {i.source for i in data.train} & {i.source for i in data.val}


def test_folder_accepts_a_coop_split_json(tmp_path):
    trees.write_folder_classes(tmp_path / "imgs", {"x": 4, "y": 4})
    entries = [[f"imgs/{c}/{i:03d}.png", label, c] for label, c in enumerate("xy") for i in range(4)]
    (tmp_path / "split.json").write_text(json.dumps({"train": entries[0:2] + entries[4:6],
                                                     "val": [entries[2], entries[6]],
                                                     "test": [entries[3], entries[7]]}))
    (tmp_path / "classnames.txt").write_text("x letter x\n")
    data = build_dataset("folder", tmp_path, shots=1, seed=1)
    assert data.classnames == ["letter x", "y"]
    assert [os.path.relpath(i.source, tmp_path) for i in data.test] == ["imgs/x/003.png", "imgs/y/003.png"]


@pytest.mark.parametrize("escape", ["../outside/x/000.png", "imgs/../../outside/x/000.png", "{absolute}"])
def test_folder_split_json_cannot_name_images_outside_the_folder(escape, tmp_path):
    root = tmp_path / "mine"
    trees.write_folder_classes(root / "imgs", {"x": 4, "y": 4})
    trees.write_folder_classes(tmp_path / "outside", {"x": 1})  # it exists: only where it is refuses it
    entries = [[f"imgs/{c}/{i:03d}.png", label, c] for label, c in enumerate("xy") for i in range(4)]
    entries[3][0] = escape.format(absolute=tmp_path / "outside" / "x" / "000.png")
    (root / "split.json").write_text(json.dumps({"train": entries[0:2] + entries[4:6], "val": [],
                                                 "test": [entries[3], entries[7]]}))
    with pytest.raises(UserError, match=rf"--dataset folder: {root / 'split.json'} names 1 image\(s\) outside "
                                        rf"--root_path {root}, e.g. .*000.png; list paths relative to the folder"):
        build_dataset("folder", root, shots=1, seed=1)


def test_folder_split_json_inside_the_folder_may_use_dots_and_links(tmp_path):
    root = tmp_path / "mine"
    trees.write_folder_classes(root / "imgs", {"x": 2, "y": 2})
    trees.write_folder_classes(tmp_path / "elsewhere", {"z": 2})
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # the folder owner's own link
    entries = [["imgs/x/../x/000.png", 0, "x"], ["./imgs/y/000.png", 1, "y"], ["linked/z/000.png", 1, "y"],
               ["imgs/x/001.png", 0, "x"]]
    (root / "split.json").write_text(json.dumps({"train": entries[:2], "val": [], "test": entries[2:]}))
    assert len(build_dataset("folder", root, shots=1, seed=1).test) == 2


def test_folder_split_json_of_one_class_is_refused_as_the_folders_are(tmp_path):
    trees.write_folder_classes(tmp_path / "imgs", {"x": 3})
    entries = [[f"imgs/x/{i:03d}.png", 0, "x"] for i in range(3)]
    (tmp_path / "split.json").write_text(json.dumps({"train": entries[:2], "val": [], "test": entries[2:]}))
    with pytest.raises(UserError, match="split.json lists 1 class\\(es\\); few-shot classification needs at least two"):
        build_dataset("folder", tmp_path, shots=1, seed=1)


def test_folder_classnames_txt_typo_is_reported(tmp_path):
    trees.write_folder_classes(tmp_path, {"cat": 3, "dog": 3})
    (tmp_path / "classnames.txt").write_text("kat house cat\n")
    with pytest.raises(UserError, match="kat"):
        build_dataset("folder", tmp_path, shots=1, seed=1)


def test_dataset_template_reaches_the_prompts_through_main(tmp_path, monkeypatch):
    import dataset_trees as trees

    trees.build("dtd", tmp_path / "data")
    seen = []
    real_prompts = main.ClassPrompts

    def recording(tokenizer, prompts, device, *args, **kwargs):
        seen.append(list(prompts))
        return real_prompts(tokenizer, prompts, device, *args, **kwargs)

    monkeypatch.setattr(main, "ClassPrompts", recording)
    argv = ["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path / "data"), "--shots", "1",
            "--n_iters", "0", "--results_file", str(tmp_path / "r.jsonl")]
    main.main(argv)
    record = main.main(argv + ["--template", "dataset"])
    assert seen == [["a photo of a banded.", "a photo of a blotchy.", "a photo of a braided.", "a photo of a bubbly."],
                    ["banded texture.", "blotchy texture.", "braided texture.", "bubbly texture."]]
    assert record["config"]["template"] == "dataset"


def test_missing_fashion_mnist_explains_install(tiny_argv, tmp_path, monkeypatch):
    from datasets import fashion_mnist
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", tmp_path / "none")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        main.main(tiny_argv("--dataset", "fashion_mnist", "--root_path", str(tmp_path)))
