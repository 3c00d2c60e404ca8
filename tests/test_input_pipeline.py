"""The input pipeline: decode once, augment on uint8 tensors by torchvision's law, test images once."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import main
from datasets import Item
from datasets.base import open_rgb
from qlora_clip.config import ImageSettings
from qlora_clip.inputs import test_images
from qlora_clip.inputs.augment import crop_box, random_resized_crop_flip
from qlora_clip.inputs.loaders import default_num_workers, eval_transform
from qlora_clip.inputs.train_images import DecodedImages, DecodeOnRead, decode_all

CPU = torch.device("cpu")


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields plus fine noise: neither flat nor pure noise, like a photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))


def write_jpegs(folder, sizes) -> list[Item]:
    items = []
    for i, (width, height) in enumerate(sizes):
        path = folder / f"{i:03d}.jpg"
        photo_like(width, height, i).save(path, quality=90)
        items.append(Item(str(path), i % 3, str(i % 3)))
    return items


# --- augmentation: torchvision's law ------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(375, 500), (500, 375), (224, 224), (40, 600), (600, 30)])
def test_crop_boxes_and_flips_are_torchvisions_for_the_same_seed(height, width):
    crop = T.RandomResizedCrop(224, scale=(0.08, 1.0))
    image = torch.zeros(3, height, width)
    for seed in range(200):
        torch.manual_seed(seed)
        expected = crop.get_params(image, crop.scale, crop.ratio)
        expected_flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip draws right after the crop
        generator = torch.Generator().manual_seed(seed)
        assert crop_box(height, width, generator) == expected, seed
        assert bool(torch.rand(1, generator=generator).item() < 0.5) == expected_flip


def test_uint8_augmentation_is_within_half_a_grey_level_of_the_pil_path():
    pil_path = T.Compose([T.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(0.5), T.PILToTensor()])
    differences = []
    for seed in range(24):
        image = photo_like(500, 375, seed)
        torch.manual_seed(seed)
        reference = pil_path(image).float()
        ours = random_resized_crop_flip(torch.from_numpy(np.array(image)), 224, torch.Generator().manual_seed(seed))
        assert ours.dtype == torch.uint8 and ours.shape == (3, 224, 224)
        differences.append((ours.float() - reference).abs().mean().item())
    assert max(differences) <= 0.5, differences


# --- decode once --------------------------------------------------------------------------------

def test_train_images_are_decoded_once_into_one_shared_buffer(tmp_path, caplog):
    items = write_jpegs(tmp_path, [(50, 40), (33, 61), (64, 64)])
    sources = [item.source for item in items]
    with caplog.at_level(logging.INFO):
        images = decode_all(sources, open_rgb, budget_gb=1)
    assert isinstance(images, DecodedImages) and images.pixels.is_shared()
    assert images.pixels.numel() == 3 * (50 * 40 + 33 * 61 + 64 * 64) and "decoded 3 train images once" in caplog.text
    for i, source in enumerate(sources):
        assert torch.equal(images[i], torch.from_numpy(np.array(Image.open(source).convert("RGB"))))

    with caplog.at_level(logging.WARNING):
        fallback = decode_all(sources, open_rgb, budget_gb=1e-6)
    assert isinstance(fallback, DecodeOnRead) and "above --decode_budget_gb" in caplog.text
    assert all(torch.equal(fallback[i], images[i]) for i in range(3))


def test_the_memory_budget_fallback_trains_the_same_weights(tiny_argv, tmp_path):
    from safetensors.torch import load_file

    run = ["--n_iters", "1", "--lr", "1e-2"]
    main.main(tiny_argv(*run, "--save_path", str(tmp_path / "once")))
    main.main(tiny_argv(*run, "--save_path", str(tmp_path / "per_step"), "--decode_budget_gb", "0"))
    [a], [b] = (list((tmp_path / name).rglob("adapter_model.safetensors")) for name in ("once", "per_step"))
    once, per_step = load_file(a), load_file(b)
    assert all(torch.equal(once[k], per_step[k]) for k in once)


# --- the test images, once per sweep ------------------------------------------------------------

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
    assert test_images.load_cached(path, test_images.cache_key("mini", items, 32, 32)) is not None


def test_a_second_run_on_a_dataset_reads_the_cached_test_images(tiny_argv, tmp_path, monkeypatch):
    fills = []
    real_preprocess = test_images.preprocess
    monkeypatch.setattr(test_images, "preprocess", lambda items, *a, **k: fills.append(len(items)) or
                        real_preprocess(items, *a, **k))
    cache = ["--eval_cache_dir", str(tmp_path / "cache"), "--n_iters", "1"]
    first = main.main(tiny_argv(*cache))
    second = main.main(tiny_argv(*cache, "--seed", "2"))
    again = main.main(tiny_argv(*cache))
    assert fills == [16]  # the colour folder's 16 test images, preprocessed by the first run only
    # Filling the cache draws no random number: the run that found it filled trains identically.
    assert again["final_loss"] == first["final_loss"] and again["test_acc"] == first["test_acc"]
    for record in (first, second):
        assert record["eval_seconds"] > 0 and record["input_wait_seconds"] >= 0
    no_cache = main.main(tiny_argv("--eval_cache_dir", "", "--n_iters", "1"))
    assert fills == [16, 16] and no_cache["test_acc"] == first["test_acc"]


# --- the GPU step -------------------------------------------------------------------------------

def test_the_loaded_model_uses_pytorch_sdpa_attention():
    from qlora_clip.config import AdapterConfig, ModelConfig
    from qlora_clip.model import load_clip

    model = load_clip(ModelConfig("tiny", AdapterConfig("lora")), CPU, torch.float32).model
    assert model.base_model.model.config._attn_implementation == "sdpa"


def test_workers_default_to_none_on_the_cpu_and_to_the_free_cpus_on_a_gpu(monkeypatch):
    assert default_num_workers(CPU) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers(torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four GPU processes share the 16 CPUs
    assert default_num_workers(torch.device("cuda")) == 3
