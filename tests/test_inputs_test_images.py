"""qlora_clip/inputs/test_images.py: the test images preprocessed once and cached on disk, shared by a
sweep's runs, rebuilt when the cache is damaged."""
from __future__ import annotations

import logging
import time

import pytest
import torch
from image_files import write_jpegs

import main
from datasets.base import open_rgb
from qlora_clip.config import ImageSettings
from qlora_clip.inputs import test_images
from qlora_clip.inputs.loaders import eval_transform

SETTINGS = ImageSettings(image_size=32, resize_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def prepared(items, cache_dir, **kwargs):
    return test_images.prepared_test_images("mini", items, open_rgb, eval_transform(SETTINGS), 32, 32,
                                            str(cache_dir), num_workers=0, **kwargs)


def test_test_images_are_cached_and_reused_and_a_changed_list_gets_its_own_cache(tmp_path, monkeypatch):
    items = write_jpegs(tmp_path, [(50, 40), (40, 50), (64, 48), (30, 30)])
    fills = []
    real_preprocess = test_images.preprocess
    monkeypatch.setattr(test_images, "preprocess", lambda items, *a, **k: fills.append(len(items)) or
                        real_preprocess(items, *a, **k))
    pixels, labels = prepared(items, tmp_path / "cache")
    expected = torch.stack([eval_transform(SETTINGS)(open_rgb(item.source)) for item in items])
    assert torch.equal(pixels, expected) and labels == [item.label for item in items] and fills == [4]
    again, _ = prepared(items, tmp_path / "cache")
    assert torch.equal(again, expected) and fills == [4]  # read back, not preprocessed again
    prepared(items[:3], tmp_path / "cache")
    assert fills == [4, 3] and len(list((tmp_path / "cache").glob("*.u8"))) == 2
    # A second process of a 2-process run reads its share of the cache.
    share, share_labels = prepared(items, tmp_path / "cache", rank=1, world=2)
    assert torch.equal(share, expected[1::2]) and share_labels == [items[1].label, items[3].label]


@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
def test_a_partial_or_corrupt_cache_is_rebuilt_never_trusted(damage, tmp_path, caplog):
    items = write_jpegs(tmp_path, [(50, 40), (40, 50)])
    pixels, _ = prepared(items, tmp_path / "cache")
    expected = pixels.clone()
    [path] = (tmp_path / "cache").glob("*.u8")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-100]
    else:
        data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        rebuilt, _ = prepared(items, tmp_path / "cache")
    assert "is unusable" in caplog.text and torch.equal(rebuilt, expected)
    assert torch.equal(test_images.load_cached(path, test_images.cache_key("mini", items, 32, 32)), expected)


def test_a_second_run_on_a_dataset_reads_the_cached_test_images(tiny_argv, tmp_path, monkeypatch):
    fills = []
    real_preprocess = test_images.preprocess
    monkeypatch.setattr(test_images, "preprocess", lambda items, *a, **k: fills.append(len(items)) or
                        real_preprocess(items, *a, **k))
    cache = ["--eval_cache_dir", str(tmp_path / "cache"), "--n_iters", "1"]
    started = time.perf_counter()
    first = main.main(tiny_argv(*cache))
    second = main.main(tiny_argv(*cache, "--seed", "2"))
    again = main.main(tiny_argv(*cache))
    assert fills == [16]  # the colour folder's 16 test images, preprocessed by the first run only
    # Filling the cache draws no random number: the run that found it filled trains identically.
    assert again["final_loss"] == first["final_loss"] and again["test_acc"] == first["test_acc"]
    elapsed = time.perf_counter() - started
    for record in (first, second):
        assert 0 < record["eval_seconds"] < elapsed
        # Loading in the training process (no workers on the CPU) is waited for, within the training time.
        assert 0 < record["input_wait_seconds"] < record["train_seconds"]
    no_cache = main.main(tiny_argv("--eval_cache_dir", "", "--n_iters", "1"))
    assert fills == [16, 16] and no_cache["test_acc"] == first["test_acc"]
