"""The OOD sets of MCM's ImageNet benchmark (datasets/ood_*.py) and any image folder as an OOD set
(datasets/image_collection.py): every image at any depth, label 0, the layouts looked for, test-only."""
from __future__ import annotations

import os
import re
from pathlib import Path

import dataset_trees as trees
import pytest

from datasets import DATASET_NAMES, OOD_DATASETS, TEST_ONLY, build_dataset, build_eval_images, dataset_module
from datasets.image_collection import build_image_collection, image_files
from qlora_clip.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", trees.OOD_SETS)
def test_ood_set_reads_every_image_under_its_folder_with_label_zero(tmp_path, name):
    tree = trees.build_ood_set(name, tmp_path)
    images = build_eval_images(name, tmp_path)
    # The nested image and the upper-case suffix are found; README.txt, "._" and .thumbnails/ are not.
    assert [item.source for item in images.test] == tree.images
    assert {item.label for item in images.test} == {0}
    assert len(images.classnames) == 1


@pytest.mark.parametrize("name, folder", [("ood_inaturalist", "iNaturalist"), ("ood_sun", "SUN"),
                                          ("ood_places", "Places"), ("ood_textures", "Textures")])
def test_ood_set_in_mos_layout_directly_under_the_root(tmp_path, name, folder):
    tree = trees.build_ood_set(name, tmp_path, folder)
    assert [item.source for item in build_eval_images(name, tmp_path).test] == tree.images


def test_textures_is_the_dtd_benchmarks_image_folder_unless_mcms_layout_exists(tmp_path):
    dtd = trees.build("dtd", tmp_path)
    from_dtd = build_eval_images("ood_textures", tmp_path).test
    # Every image of the benchmark's 4 classes, all parts (the split json beside images/ is not an image).
    assert len(from_dtd) == sum(dtd.counts.values()) == 44
    assert all(item.source.startswith(str(dtd.image_dir)) for item in from_dtd)
    tree = trees.build_ood_set("ood_textures", tmp_path)
    assert [item.source for item in build_eval_images("ood_textures", tmp_path).test] == tree.images


@pytest.mark.parametrize("name", trees.OOD_SETS)
def test_ood_sets_are_test_only_and_say_which_flag_takes_them(tmp_path, name):
    assert name in DATASET_NAMES
    assert name in TEST_ONLY
    assert name in OOD_DATASETS
    trees.build_ood_set(name, tmp_path)
    with pytest.raises(UserError, match=f"--dataset {name} is a test-only dataset.*--ood_datasets {name}"):
        build_dataset(name, tmp_path, shots=1, seed=1)


def test_missing_ood_set_names_every_folder_looked_for(tmp_path):
    with pytest.raises(UserError) as err:
        build_eval_images("ood_sun", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "ImageNet_OOD_dataset" / "SUN") in message
    assert str(tmp_path / "SUN") in message
    assert "DATASETS.md#ood_sun" in message


def test_ood_folder_without_images_is_refused(tmp_path):
    (tmp_path / "ImageNet_OOD_dataset" / "Places" / "images").mkdir(parents=True)
    (tmp_path / "ImageNet_OOD_dataset" / "Places" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"--dataset ood_places: no image files under .*Places.*DATASETS.md#ood_places"):
        build_eval_images("ood_places", tmp_path)


def test_any_folder_in_any_layout_is_an_ood_set(tmp_path):
    folder = tmp_path / "my photos"
    deep = [folder / "a.png", folder / "2024" / "05" / "b.JPEG", folder / "x" / "y" / "z" / "c.webp"]
    for path in deep:
        trees._write_image(path, 0)
    (folder / "2024" / "list.csv").write_text("not an image")
    (folder / "x" / "._c.webp").write_bytes(b"AppleDouble")
    images = build_image_collection(folder)
    assert images.name == str(folder)
    assert images.classnames == ["my photos"]
    assert [item.source for item in images.test] == [str(path) for path in sorted(deep)]
    assert {item.label for item in images.test} == {0}


def test_linked_folders_are_followed_once(tmp_path):
    outside = tmp_path / "elsewhere"
    trees._write_image(outside / "d.jpg", 0)
    folder = tmp_path / "collection"
    trees._write_image(folder / "e.jpg", 0)
    os.symlink(outside, folder / "linked")
    os.symlink(folder, folder / "linked" / "back")  # a loop: collection/linked/back -> collection
    assert [p.name for p in image_files(folder)] == ["e.jpg", "d.jpg"]


def test_a_path_that_is_no_image_folder_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"--ood_datasets {tmp_path / 'nope'}: ") + ".*is not a folder"):
        build_image_collection(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--ood_datasets .*empty: no image files under"):
        build_image_collection(tmp_path / "empty")


def test_datasets_md_ood_table_matches_the_counts_the_checker_uses():
    text = (REPO / "DATASETS.md").read_text()
    rows = dict(re.findall(r"^\| `(ood_\w+)` \| [^|]+ \| ([\d,]+) \|", text, flags=re.M))
    assert sorted(rows) == sorted(OOD_DATASETS)
    for name, count in rows.items():
        sizes = dataset_module(name).SIZES
        assert (sizes.classes, sizes.train, sizes.val, sizes.test) == (1, 0, 0, int(count.replace(",", ""))), name
