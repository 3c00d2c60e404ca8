"""The baselines' frozen features: seeded views, the on-disk cache (atomic, verified, keyed), and a
sweep that encodes the test set once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main
from qlora_clip.evaluation import feature_cache
from qlora_clip.methods.baselines.base import FeatureBaseline
from qlora_clip.methods.baselines.features import FeatureBank
from qlora_clip.methods.baselines.views import AugmentedViews, ViewSet, view_seed


def test_view_seeds_depend_on_seed_stream_view_and_image_only():
    seeds = {view_seed(s, stream, v, i) for s in (1, 2) for stream in ("a", "b") for v in range(3) for i in range(4)}
    assert len(seeds) == 2 * 2 * 3 * 4
    assert view_seed(1, "tip-cache", 2, 3) == view_seed(1, "tip-cache", 2, 3) < 2 ** 63


def test_views_are_the_same_whatever_the_order_they_are_drawn_in():
    images = [torch.randint(0, 255, (20, 24, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    views = AugmentedViews(images, ViewSet("s", (0.5, 1.0), 2), seed=1, size=8)
    forward = [views[k] for k in range(len(views))]
    backward = [views[k] for k in reversed(range(len(views)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert not torch.equal(views[0], views[3])  # view 0 and view 1 of image 0 differ


def test_the_cache_reads_back_what_it_wrote_and_rejects_corrupt_or_other_files(tmp_path):
    key = {"format": 1, "set": "test", "items_sha256": "abc"}
    features = torch.randn(2, 5, 3)
    path = feature_cache.cache_path(tmp_path, "dtd-test", key)
    feature_cache.write(path, key, features)
    assert torch.equal(feature_cache.load(path, key), features)
    assert feature_cache.load(path, {**key, "set": "val"}) is None  # another key: never trusted
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert feature_cache.load(path, key) is None  # checksum differs
    path.write_bytes(bytes(raw[:-4]))
    assert feature_cache.load(path, key) is None  # truncated


def baseline_argv(folder, tmp_path, mode: str, seed: int) -> list[str]:
    return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(folder), "--shots", "2",
            "--seed", str(seed), "--mode", mode, "--eval_cache_dir", str(tmp_path / "cache"),
            "--results_file", str(tmp_path / "results.jsonl")]


def test_a_sweep_over_seeds_encodes_the_test_set_once(color_folder, tmp_path, monkeypatch):
    # The test set is the shared evaluator's: every image it encodes goes through the method's image_embeddings
    # (the baselines' own train and val sets are encoded by the feature bank, straight from the base).
    encoded = []
    image_embeddings = FeatureBaseline.image_embeddings

    def counted(self, images):
        encoded.append(len(images))
        return image_embeddings(self, images)
    monkeypatch.setattr(FeatureBaseline, "image_embeddings", counted)
    first = main.main(baseline_argv(color_folder, tmp_path, "tip_adapter", seed=1))
    second = main.main(baseline_argv(color_folder, tmp_path, "tip_adapter", seed=2))
    third = main.main(baseline_argv(color_folder, tmp_path, "linear_probe", seed=2))
    # A new draw (seed 2) is a new cache entry for the train views; the same draw reuses them.
    first_views = first["baseline_features"]["train-tip-cache"]
    second_views = second["baseline_features"]["train-tip-cache"]
    assert not first_views["cached"]
    assert not second_views["cached"]
    assert second_views["file"] != first_views["file"]
    assert third["baseline_features"]["val"]["cached"]  # seed 2's val images, encoded by the second run
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["mode"] for line in lines] == ["tip_adapter", "tip_adapter", "linear_probe"]
    [test_images] = first["test_images_per_process"]
    assert sum(encoded) == test_images  # the encoder never saw the test images again
    assert not first["baseline_features"]["test"]["cached"]
    assert second["baseline_features"]["test"]["cached"]
    assert third["baseline_features"]["test"]["file"] == first["baseline_features"]["test"]["file"]


def test_no_disk_cache_with_an_empty_eval_cache_dir(color_folder, tmp_path):
    argv = baseline_argv(color_folder, tmp_path, "linear_probe", seed=1)
    argv[argv.index("--eval_cache_dir") + 1] = ""
    record = main.main(argv)
    assert set(record["baseline_features"]) == {"train", "val", "test"}
    for feature_set in record["baseline_features"].values():
        assert feature_set["file"] is None
        assert not feature_set["cached"]


@pytest.mark.parametrize("change", [{"compute_dtype": "bf16"}, {"seed": 2}])
def test_the_key_holds_what_the_features_depend_on(change):
    from types import SimpleNamespace

    from qlora_clip.backbones.families import ImageSettings
    from qlora_clip.training.precision import resolve_precision

    def key(compute_dtype="fp32", seed=1):
        encoder = SimpleNamespace(image=ImageSettings(32, 32, (0.5,) * 3, (0.5,) * 3),
                                  precision=resolve_precision(compute_dtype, torch.device("cpu")))
        data = SimpleNamespace(train=[], val=[], test=[], load_image=None)
        bank = FeatureBank(encoder, data, "example/ckpt", "dtd", seed, None, None, 1.0)
        views = {"kind": "views", **ViewSet("tip-cache", (0.5, 1.0), 10).describe(), "seed": seed}
        return bank.key("train-tip-cache", [], views), bank.key("test", [], bank._centre())
    base_views, base_test = key()
    views, test = key(**change)
    assert views != base_views
    assert (test != base_test) == ("compute_dtype" in change)  # the test set's key holds no seed


def test_the_key_follows_the_images_where_they_are_and_what_is_in_them(tmp_path):
    """Replacing a folder's images in place, or the same relative paths elsewhere, never serves old features."""
    import os
    from types import SimpleNamespace

    from PIL import Image

    from datasets import Item
    from qlora_clip.data.images import open_rgb
    from qlora_clip.backbones.families import ImageSettings
    from qlora_clip.training.precision import resolve_precision

    def items_in(folder: Path) -> list[Item]:
        folder.mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(("red", "blue")):
            Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
        return [Item(str(folder / f"{i}.png"), i, str(i)) for i in range(2)]

    encoder = SimpleNamespace(image=ImageSettings(32, 32, (0.5,) * 3, (0.5,) * 3),
                              precision=resolve_precision("fp32", torch.device("cpu")))
    bank = FeatureBank(encoder, SimpleNamespace(train=[], val=[], test=[], load_image=open_rgb),
                       "example/ckpt", "dtd", 1, None, None, 1.0)
    items = items_in(tmp_path / "a")
    before = bank.key("test", items, bank._centre())
    Image.new("RGB", (8, 8), "green").save(items[0].source)
    stat = os.stat(items[0].source)
    os.utime(items[0].source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert bank.key("test", items, bank._centre()) != before
    assert bank.key("test", items_in(tmp_path / "b"), bank._centre()) != bank.key("test", items, bank._centre())
