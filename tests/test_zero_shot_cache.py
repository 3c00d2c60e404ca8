"""The zero-shot store (qlora_clip/evaluation/zero_shot_cache.py, keyed by zero_shot_key.py): a sweep's later runs on
a dataset read the first run's zero-shot accuracy instead of computing it; a corrupt entry is recomputed."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import main
from qlora_clip.evaluation import zero_shot_cache
from qlora_clip.evaluation import zero_shot_key
from qlora_clip.backbones.families import ImageSettings


@pytest.fixture
def zero_shot_passes(monkeypatch) -> list[str]:
    """The names of the test sets a zero-shot pass really ran on (the adapter switched off)."""
    seen = []
    real_accuracy = main.Evaluator.accuracy

    def recording(self, test, desc="test"):
        if desc.startswith("zero-shot"):
            seen.append(test.name)
        return real_accuracy(self, test, desc)
    monkeypatch.setattr(main.Evaluator, "accuracy", recording)
    return seen


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "zero-shot").glob("*.json"))


def test_a_sweeps_second_run_on_a_dataset_reads_the_zero_shot_accuracy(tiny_argv, tmp_path, zero_shot_passes):
    cache = ["--eval_cache_dir", str(tmp_path / "cache"), "--n_iters", "1"]
    first = main.main(tiny_argv(*cache, "--mode", "lora"))
    assert zero_shot_passes == ["folder"]
    assert not first["zero_shot_cached"]
    assert len(entries(tmp_path / "cache")) == 1
    # Another method and seed on the same full-precision base and test set: no zero-shot pass.
    second = main.main(tiny_argv(*cache, "--mode", "dora", "--seed", "2", "--lr", "1e-3"))
    assert zero_shot_passes == ["folder"]
    assert second["zero_shot_cached"]
    assert second["zero_shot_acc"] == first["zero_shot_acc"]
    # The calibration of the same pass is stored with it.
    assert second["zero_shot_ece"] == first["zero_shot_ece"]
    assert second["reliability"]["zero_shot"] == first["reliability"]["zero_shot"]
    # The 4-bit base is another model: its own entry.
    quantized = main.main(tiny_argv(*cache, "--mode", "qlora"))
    assert zero_shot_passes == ["folder", "folder"]
    assert not quantized["zero_shot_cached"]
    assert len(entries(tmp_path / "cache")) == 2
    # --no_zero_shot_cache computes it again, and the value is the stored one.
    again = main.main(tiny_argv(*cache, "--mode", "lora", "--no_zero_shot_cache"))
    assert zero_shot_passes == ["folder"] * 3
    assert not again["zero_shot_cached"]
    assert again["zero_shot_acc"] == first["zero_shot_acc"]
    # Without a cache folder there is no store either.
    main.main(tiny_argv("--eval_cache_dir", "", "--n_iters", "1"))
    assert zero_shot_passes == ["folder"] * 4


def test_a_corrupt_entry_is_recomputed_with_a_warning_and_replaced(tiny_argv, tmp_path, zero_shot_passes, caplog):
    cache = ["--eval_cache_dir", str(tmp_path / "cache"), "--n_iters", "0"]
    first = main.main(tiny_argv(*cache))
    [entry] = entries(tmp_path / "cache")
    stored = json.loads(entry.read_text())
    stored["zero_shot_acc"] = 99.0  # edited without its checksum
    entry.write_text(json.dumps(stored))
    with caplog.at_level(logging.WARNING):
        second = main.main(tiny_argv(*cache))
    assert "is unusable (its checksum differs)" in caplog.text
    assert zero_shot_passes == ["folder", "folder"]
    assert not second["zero_shot_cached"]
    assert second["zero_shot_acc"] == first["zero_shot_acc"]
    entry.write_text(entry.read_text()[:-20])  # torn
    third = main.main(tiny_argv(*cache))
    assert zero_shot_passes == ["folder"] * 3
    assert third["zero_shot_acc"] == first["zero_shot_acc"]
    fourth = main.main(tiny_argv(*cache))  # the rewritten entry verifies
    assert zero_shot_passes == ["folder"] * 3
    assert fourth["zero_shot_cached"]


def test_base2new_new_classes_have_their_own_cached_zero_shot(tiny_argv, tmp_path, zero_shot_passes):
    run = tiny_argv("--protocol", "base2new", "--n_iters", "1", "--eval_cache_dir", str(tmp_path / "cache"))
    first = main.main(run)
    assert zero_shot_passes == ["folder", "folder (new classes)"]
    assert first["extra_zero_shot_cached"] == {"folder (new classes)": False}
    assert not first["zero_shot_cached"]
    second = main.main([*run, "--mode", "dora"])
    assert zero_shot_passes == ["folder", "folder (new classes)"]  # neither computed again
    assert second["extra_zero_shot_cached"] == {"folder (new classes)": True}
    assert second["zero_shot_cached"]
    assert (second["zero_shot_base_acc"], second["zero_shot_new_acc"]) == (first["zero_shot_base_acc"],
                                                                            first["zero_shot_new_acc"])
    # The few-shot protocol's test set has all four classes: another entry.
    main.main(tiny_argv("--n_iters", "0", "--eval_cache_dir", str(tmp_path / "cache")))
    assert zero_shot_passes[-1] == "folder"
    assert len(entries(tmp_path / "cache")) == 3


# --- the store and its key ------------------------------------------------------------------------

IMAGE = ImageSettings(image_size=32, resize_size=32, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_the_store_writes_atomically_and_reads_only_its_own_key(tmp_path):
    key = {"a": 1, "image": (1, 2)}  # a tuple reads back from JSON as a list: still the same key
    assert zero_shot_cache.read(tmp_path, key) is None
    zero_shot_cache.write(tmp_path, key, 42.5)
    assert zero_shot_cache.read(tmp_path, key) == 42.5
    assert [p.name for p in tmp_path.iterdir()] == [zero_shot_cache.entry_path(tmp_path, key).name]  # no temp file
    assert zero_shot_cache.read(tmp_path, {"a": 2, "image": (1, 2)}) is None
    # An entry copied under another key's name is refused, not trusted.
    other = {"a": 3}
    zero_shot_cache.entry_path(tmp_path, other).write_text(zero_shot_cache.entry_path(tmp_path, key).read_text())
    assert zero_shot_cache.read(tmp_path, other) is None


def test_the_calibration_sums_are_stored_and_verified_with_the_accuracy(tmp_path, caplog):
    key = {"a": 1}
    zero_shot_cache.write(tmp_path, key, 42.5, [1.0, 0.5, 0.25])
    assert zero_shot_cache.read_entry(tmp_path, key) == {"zero_shot_acc": 42.5, "calibration_sums": [1.0, 0.5, 0.25]}
    path = zero_shot_cache.entry_path(tmp_path, key)
    stored = json.loads(path.read_text())
    stored["calibration_sums"][0] = 2.0  # edited without its checksum
    path.write_text(json.dumps(stored))
    with caplog.at_level(logging.WARNING):
        assert zero_shot_cache.read_entry(tmp_path, key) is None
    assert "its checksum differs" in caplog.text
    # An entry written before the sums were stored reads back without them (and the evaluator computes the pass).
    zero_shot_cache.write(tmp_path, key, 42.5)
    assert zero_shot_cache.read_entry(tmp_path, key) == {"zero_shot_acc": 42.5, "calibration_sums": None}


def test_a_failed_write_is_a_warning_not_an_error(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        zero_shot_cache.write(blocked / "zero-shot", {"a": 1}, 10.0)
    assert "could not store the zero-shot accuracy" in caplog.text


def test_the_key_changes_with_the_checkpoint_files_precision_base_and_prompts(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    base = zero_shot_key.base_key(str(checkpoint), "fp32", False, IMAGE, "cpu", 4)
    assert base == zero_shot_key.base_key(str(checkpoint), "fp32", False, IMAGE, "cpu", 4)
    assert base != zero_shot_key.base_key(str(checkpoint), "fp16", False, IMAGE, "cpu", 4)
    assert base != zero_shot_key.base_key(str(checkpoint), "fp32", True, IMAGE, "cpu", 4)
    (checkpoint / "model.safetensors").write_bytes(b"other weights")
    assert base != zero_shot_key.base_key(str(checkpoint), "fp32", False, IMAGE, "cpu", 4)
    os.utime(checkpoint / "model.safetensors", ns=(1, 1))
    assert base["checkpoint"]["files"][0][:2] == ["model.safetensors", 7]
    images = {"dataset": "dtd", "test_list_sha256": "x"}
    assert zero_shot_key.test_set_key(images, ["a photo of a cat."]) != zero_shot_key.test_set_key(
        images, ["cat texture."])
    assert zero_shot_key.checkpoint_fingerprint("no-such/hub-id") == {"hub_id": "no-such/hub-id"}
