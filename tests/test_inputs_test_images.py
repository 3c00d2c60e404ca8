"""qlora_clip/inputs/test_images.py: the test images preprocessed once and cached on disk, shared by a
sweep's runs, rebuilt when the cache is damaged."""
from __future__ import annotations

import errno
import io
import logging
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from image_files import write_jpegs
from PIL import Image

import main
from datasets import Item
from qlora_clip.data.images import open_rgb
from qlora_clip.backbones.families import ImageSettings
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
    assert torch.equal(pixels, expected)
    assert labels == [item.label for item in items]
    assert fills == [4]
    again, _ = prepared(items, tmp_path / "cache")
    assert torch.equal(again, expected)
    assert fills == [4]  # read back, not preprocessed again
    prepared(items[:3], tmp_path / "cache")
    assert fills == [4, 3]
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2
    # A second process of a 2-process run reads its share of the cache.
    share, share_labels = prepared(items, tmp_path / "cache", rank=1, world=2)
    assert torch.equal(share, expected[1::2])
    assert share_labels == [items[1].label, items[3].label]


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
    assert "is unusable" in caplog.text
    assert torch.equal(rebuilt, expected)
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
    assert again["final_loss"] == first["final_loss"]
    assert again["test_acc"] == first["test_acc"]
    elapsed = time.perf_counter() - started
    for record in (first, second):
        assert 0 < record["eval_seconds"] < elapsed
        # Loading in the training process (no workers on the CPU) is waited for, within the training time.
        assert 0 < record["input_wait_seconds"] < record["train_seconds"]
    no_cache = main.main(tiny_argv("--eval_cache_dir", "", "--n_iters", "1"))
    assert fills == [16, 16]
    assert no_cache["test_acc"] == first["test_acc"]


# --- the cache key: where the images are and what is in them; full disks; killed writers ----------

SMALL = ImageSettings(image_size=16, resize_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def write_images(folder, colours, fmt="bmp") -> list[Item]:
    """Flat single-colour images; BMP files of one size are the same size whatever their colour."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, colour in enumerate(colours):
        path = folder / f"{i:02d}.{fmt}"
        Image.fromarray(np.full((16, 16, 3), colour, dtype=np.uint8)).save(path)
        items.append(Item(str(path), i % 2, str(i % 2)))
    return items


def prepared_small(items, cache_dir, load_image=open_rgb):
    return test_images.prepared_test_images("mini", items, load_image, eval_transform(SMALL), 16, 16,
                                            str(cache_dir), num_workers=0)[0]


@pytest.fixture
def fills(monkeypatch) -> list[int]:
    """How many images each call to the preprocessing went through (a cache hit adds nothing)."""
    calls = []
    real = test_images.preprocess
    monkeypatch.setattr(test_images, "preprocess",
                        lambda items, *a, **k: calls.append(len(items)) or real(items, *a, **k))
    return calls


def test_images_replaced_in_place_are_not_served_from_the_cache(tmp_path, fills):
    items = write_images(tmp_path / "test", [(200, 0, 0), (0, 200, 0)])
    first = prepared_small(items, tmp_path / "cache")
    before = [os.stat(item.source) for item in items]
    write_images(tmp_path / "test", [(0, 0, 200), (90, 90, 90)])  # same names, same sizes, new pixels
    after = [os.stat(item.source) for item in items]
    assert [s.st_size for s in before] == [s.st_size for s in after]
    assert [s.st_mtime_ns for s in before] != [s.st_mtime_ns for s in after]
    second = prepared_small(items, tmp_path / "cache")
    assert fills == [2, 2]
    assert not torch.equal(first, second)
    assert int(second[0, 2].float().mean()) == 200  # the new blue image, not the cached red one
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2


def test_equal_relative_paths_in_two_folders_are_two_cache_entries(tmp_path, fills, monkeypatch):
    red = write_images(tmp_path / "a" / "test", [(200, 0, 0), (200, 0, 0)])
    write_images(tmp_path / "b" / "test", [(0, 200, 0), (0, 200, 0)])
    relative = [Item(os.path.relpath(item.source, tmp_path / "a"), item.label, item.classname) for item in red]
    monkeypatch.chdir(tmp_path / "a")
    in_a = prepared_small(relative, tmp_path / "cache")
    monkeypatch.chdir(tmp_path / "b")  # the same relative paths, another folder
    in_b = prepared_small(relative, tmp_path / "cache")
    assert fills == [2, 2]
    assert int(in_a[0, 0].float().mean()) == 200
    assert int(in_b[0, 1].float().mean()) == 200
    assert int(in_b[0, 0].float().mean()) == 0


def test_a_run_after_replacing_a_folders_test_images_measures_the_new_images(tmp_path, fills):
    import shutil

    from conftest import make_color_folder

    root = make_color_folder(tmp_path / "colors", per_class=6)
    argv = ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root), "--shots", "1",
            "--n_iters", "0", "--results_file", str(tmp_path / "r.jsonl"), "--eval_cache_dir", str(tmp_path / "cache")]
    main.main(argv)
    # Every red image becomes a copy of a blue one, under the same names.
    blue = sorted((root / "blue").iterdir())
    for i, path in enumerate(sorted((root / "red").iterdir())):
        shutil.copyfile(blue[i % len(blue)], path)
    main.main(argv)
    assert len(fills) == 2  # the second run prepared the test images again


def test_index_sources_are_keyed_by_the_files_they_are_read_from(tmp_path):
    source = tmp_path / "images.idx"
    source.write_bytes(bytes(range(256)))

    class FromFile:
        source_files = (str(source),)

        def __call__(self, index):
            return Image.new("RGB", (16, 16))

    items = [Item(i, 0, "0") for i in range(3)]
    key = test_images.cache_key("idx", items, 16, 16, FromFile())
    stat = source.stat()
    source.write_bytes(bytes(reversed(range(256))))  # same size; then even the time put back
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert test_images.cache_key("idx", items, 16, 16, FromFile()) != key
    assert test_images.cache_key("idx", items, 16, 16, lambda index: None) is None


def test_sources_that_cannot_be_identified_stay_in_memory_with_a_warning(tmp_path, caplog):
    items = [Item(i, 0, "0") for i in range(2)]
    with caplog.at_level(logging.WARNING):
        pixels = prepared_small(items, tmp_path / "cache", load_image=lambda index: Image.new("RGB", (16, 16), "red"))
    assert pixels.shape == (2, 3, 16, 16)
    assert "cannot be identified" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_fashion_mnist_test_set_names_its_idx_files():
    from datasets import fashion_mnist
    from datasets.splits import NotFound

    try:
        split = fashion_mnist.load(fashion_mnist.SYSTEM_FOLDER.parent)
    except NotFound as err:  # the Debian package is not installed: nothing to read; any other error fails
        pytest.skip(f"no Fashion-MNIST: {err}")
    assert len(split.load_image.source_files) == 2
    assert all(os.path.isfile(path) for path in split.load_image.source_files)


# --- a full disk ---------------------------------------------------------------------------------

class FullDisk(io.RawIOBase):
    """A file that takes a few bytes and then reports that the disk is full."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(data[:10] if isinstance(data, str) else bytes(memoryview(data)[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_full_cache_disk_keeps_the_pixels_in_memory_and_the_run_goes_on(tiny_argv, tmp_path, monkeypatch,
                                                                       caplog):
    real_fdopen = os.fdopen
    monkeypatch.setattr(test_images.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        record = main.main(tiny_argv("--eval_cache_dir", str(cache)))
    assert record is not None
    assert 0 <= record["test_acc"] <= 100
    assert "could not write the test-image cache" in caplog.text
    assert "No space left on device" in caplog.text
    # Neither a cache file nor its temporary, of the test images or of the zero-shot store (same disk).
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert "could not store the zero-shot accuracy" in caplog.text

    monkeypatch.setattr(test_images.os, "fdopen", real_fdopen)
    assert main.main(tiny_argv("--eval_cache_dir", str(cache)))["test_acc"] == record["test_acc"]


# --- killed writers --------------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_fill_removes_temporaries_of_killed_writers(tmp_path):
    items = write_images(tmp_path / "test", [(200, 0, 0), (0, 200, 0)])
    cache = tmp_path / "cache"
    cache.mkdir()
    name = test_images.cache_path(cache, test_images.cache_key("mini", items, 16, 16)).name
    host = socket.gethostname()
    killed = cache / f".{name}.tmp-{host}-{dead_pid()}-k1ll3d"
    old = cache / f".{name}.x8y_z9ab"                      # an older version's name, 7 hours old
    remote = cache / f".{name}.tmp-other-host-1-r3m0t3"    # another machine's, recent: may be writing
    live = cache / f".{name}.tmp-{host}-{os.getpid()}-l1v3"  # this process is alive
    other_entry = cache / ".another-entry.u8.tmp-x-1-abc"
    for path in (killed, old, remote, live, other_entry):
        path.write_bytes(b"\0" * 1000)
    seven_hours_ago = time.time() - 7 * 3600
    os.utime(old, (seven_hours_ago, seven_hours_ago))

    prepared_small(items, cache)
    left = {path.name for path in cache.iterdir()}
    assert left == {name, remote.name, live.name, other_entry.name}

    os.utime(remote, (seven_hours_ago, seven_hours_ago))
    assert test_images.remove_stale_temporaries(cache / name) == [remote]


def test_a_folder_given_by_its_path_is_cached_inside_the_cache_folder(tmp_path):
    """--ood_datasets PATH names the set by its absolute path: its cache file must not land beside that folder."""
    from qlora_clip.inputs.test_images import cache_path

    cache = tmp_path / "cache"
    path = cache_path(cache, {"dataset": str(tmp_path / "my images" / "ood"), "crop": 224})
    assert path.parent == cache
    assert path.name.endswith(".u8") and "/" not in path.name
    other = cache_path(cache, {"dataset": str(tmp_path / "my_images" / "ood"), "crop": 224})
    assert other != path  # the digest of the whole key keeps look-alike names apart
