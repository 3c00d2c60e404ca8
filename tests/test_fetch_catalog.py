"""The fetch catalog: its published sources and checksums are torchvision's, and every file lands where
the dataset's loader reads it."""
from __future__ import annotations

import inspect
from pathlib import Path

import dataset_trees as trees
import pytest
import torchvision.datasets as tv

from datasets import DATASET_NAMES, OOD_DATASETS
from datasets.fetch import CATALOG


def remote(dataset: str, name: str):
    return next(place.remote for place in CATALOG[dataset].places if place.remote.name == name)


def test_published_urls_and_checksums_are_the_ones_torchvision_downloads():
    pets_images = tv.OxfordIIITPet._RESOURCES[0]
    flowers_name, flowers_md5 = tv.Flowers102._file_dict["image"]
    expected = {
        ("dtd", "dtd-r1.0.1.tar.gz"): (tv.DTD._URL, tv.DTD._MD5),
        ("food101", "food-101.tar.gz"): (tv.Food101._URL, tv.Food101._MD5),
        ("sun397", "SUN397.tar.gz"): (tv.SUN397._DATASET_URL, tv.SUN397._DATASET_MD5),
        ("oxford_pets", "images.tar.gz"): pets_images,
        ("oxford_flowers", "102flowers.tgz"): (tv.Flowers102._download_url_prefix + flowers_name, flowers_md5),
        ("fgvc", "fgvc-aircraft-2013b.tar.gz"): (tv.FGVCAircraft._URL, None),
    }
    for (dataset, name), (url, md5) in expected.items():
        assert (remote(dataset, name).urls[0], remote(dataset, name).md5) == (url, md5), name
    # EuroSAT's and Caltech101's are written inside their download methods.
    for dataset, name, cls in (("eurosat", "EuroSAT.zip", tv.EuroSAT),
                               ("caltech101", "caltech-101.zip", tv.Caltech101)):
        source = inspect.getsource(cls.download)
        assert remote(dataset, name).urls[0] in source
        assert remote(dataset, name).md5 in source


def test_every_dataset_but_our_own_two_has_an_entry():
    assert list(CATALOG) == [name for name in DATASET_NAMES if name not in ("fashion_mnist", "folder")]
    assert set(OOD_DATASETS) <= set(CATALOG)


def test_ood_textures_is_dtds_own_archive():
    assert remote("ood_textures", "dtd-r1.0.1.tar.gz") == remote("dtd", "dtd-r1.0.1.tar.gz")


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_file_lands_where_the_loader_reads_it(tmp_path, name):
    """The miniature trees are laid out as the loaders read them (their tests say so): each target is in one."""
    if name in trees.VARIANTS:
        trees.build_variant(name, tmp_path)
    elif name in trees.OOD_SETS:
        trees.build_ood_set(name, tmp_path)  # MCM's layout, the one the fetch writes
    else:
        trees.build(name, tmp_path)  # CoOp's folder names, the ones the fetch writes
    for place in CATALOG[name].places:
        assert (tmp_path / place.target).exists(), place.target
        assert place.remote.is_archive == (tmp_path / place.target).is_dir(), place.target


def test_datasets_md_leads_every_fetchable_section_with_the_command():
    text = (Path(__file__).resolve().parents[1] / "DATASETS.md").read_text()
    for name in CATALOG:
        # The OOD sets are sections of one level down, under "ImageNet's OOD sets".
        level = "###" if name in OOD_DATASETS else "##"
        section = text.split(f"\n{level} {name}\n", 1)[1]
        first_paragraph = section.strip().split("\n\n", 1)[0]
        assert f"check_data.py --download {name} --root_path DATA" in first_paragraph, name
