"""datasets/imagenet_variants.py and its four datasets, ImageNet-V2, -Sketch, -A and -R: CoOp's layouts, labels,
class names, the 200-class subsets, test-only."""
from __future__ import annotations

import re

import dataset_trees as trees
import pytest

from datasets import DATASET_NAMES, TEST_ONLY, build_dataset, build_eval_images
from qlora_clip.errors import UserError


@pytest.mark.parametrize("name", trees.VARIANTS)
def test_variant_labels_and_class_names(tmp_path, name):
    tree = trees.build_variant(name, tmp_path)
    images = build_eval_images(name, tmp_path)
    assert images.name == name
    assert images.classnames == tree.classnames
    assert {item.source: item.label for item in images.test} == tree.labels
    assert all(images.classnames[item.label] == item.classname for item in images.test)
    assert images.prompts()[0] == f"a photo of a {tree.classnames[0]}."


def test_imagenetv2_folder_numbers_are_lines_of_classnames_txt(tmp_path):
    tree = trees.build_variant("imagenetv2", tmp_path)
    images = build_eval_images("imagenetv2", tmp_path)
    # All classes compete, in classnames.txt's order; folder "10" is class 10, not the 3rd folder by name.
    assert images.classnames == list(trees.VARIANT_CLASSES.values())
    in_ten = {item.label for item in images.test if "/10/" in item.source}
    assert in_ten == {10}
    assert images.classnames[10] == "brambling"
    assert len(images.test) == len(tree.labels) == 12 * trees.VARIANT_IMAGES


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_subset_variants_classify_among_their_own_classes_only(tmp_path, name):
    trees.build_variant(name, tmp_path)
    images = build_eval_images(name, tmp_path)
    _, _, wnids = trees.VARIANT_LAYOUTS[name]
    # Labels 0..k-1 follow the sorted folder names; names come by WordNet id even though the
    # fixture's classnames.txt lists the ids in reverse order.
    assert images.classnames == [trees.VARIANT_CLASSES[w] for w in sorted(wnids)]
    assert len(images.classnames) == 4 < len(trees.VARIANT_CLASSES)
    assert {item.label for item in images.test} == set(range(4))


def test_imagenet_a_ignores_the_readme_beside_the_class_folders(tmp_path):
    tree = trees.build_variant("imagenet_a", tmp_path)
    assert (tree.images / "README.txt").is_file()
    assert not any(item.source.endswith(".txt") for item in build_eval_images("imagenet_a", tmp_path).test)


@pytest.mark.parametrize("name", trees.VARIANTS)
def test_without_its_copy_the_variant_reads_imagenets_classnames(tmp_path, name):
    tree = trees.build_variant(name, tmp_path, copy=False)
    assert not tree.classnames_file.exists()
    assert (tmp_path / "imagenet" / "classnames.txt").is_file()
    assert build_eval_images(name, tmp_path).classnames == tree.classnames


def test_missing_classnames_names_both_places(tmp_path):
    tree = trees.build_variant("imagenet_r", tmp_path)
    tree.classnames_file.unlink()
    with pytest.raises(UserError) as err:
        build_eval_images("imagenet_r", tmp_path)
    assert str(tree.classnames_file) in str(err.value)
    assert str(tmp_path / "imagenet" / "classnames.txt") in str(err.value)
    assert "DATASETS.md#imagenet_r" in str(err.value)


def test_missing_variant_folder_names_coops_layout(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "imagenet-sketch" / "images"))):
        build_eval_images("imagenet_sketch", tmp_path)


def test_wnid_folder_without_a_class_name_is_named(tmp_path):
    tree = trees.build_variant("imagenet_sketch", tmp_path)
    trees._write_image(tree.images / "n09999999" / "a.JPEG", 0)
    with pytest.raises(UserError, match="n09999999"):
        build_eval_images("imagenet_sketch", tmp_path)


def test_imagenetv2_folder_beyond_the_class_list_is_named(tmp_path):
    tree = trees.build_variant("imagenetv2", tmp_path)
    trees._write_image(tree.images / "12" / "a.jpeg", 0)
    with pytest.raises(UserError, match=r"\['12'\] that are not class numbers 0-11"):
        build_eval_images("imagenetv2", tmp_path)


def test_empty_class_folder_is_an_incomplete_download(tmp_path):
    tree = trees.build_variant("imagenet_a", tmp_path)
    (tree.images / "n01440764").mkdir()
    with pytest.raises(UserError, match="no images in 1 class folder.*n01440764"):
        build_eval_images("imagenet_a", tmp_path)


@pytest.mark.parametrize("name", trees.VARIANTS)
def test_variants_are_test_only(tmp_path, name):
    assert name in DATASET_NAMES
    assert name in TEST_ONLY
    trees.build_variant(name, tmp_path)
    with pytest.raises(UserError, match=f"--dataset {name} is a test-only dataset.*--eval_datasets {name}"):
        build_dataset(name, tmp_path, shots=1, seed=1)


def test_benchmarks_build_as_eval_targets_with_their_full_test_sets(tmp_path):
    tree = trees.build("dtd", tmp_path)
    images = build_eval_images("dtd", tmp_path, template="dataset")
    assert images.classnames == tree.classnames
    assert len(images.test) == tree.counts["test"]
    assert images.prompts() == ["banded texture.", "blotchy texture.", "braided texture.", "bubbly texture."]
