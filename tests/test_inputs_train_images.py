"""qlora_clip/inputs/train_images.py: the train images decoded once into shared memory, or per read above
--decode_budget_gb, with the same pixels either way."""
from __future__ import annotations

import logging

import numpy as np
import torch
from image_files import write_jpegs
from PIL import Image

import main
from qlora_clip.data.images import open_rgb
from qlora_clip.inputs.train_images import DecodedImages, DecodeOnRead, decode_all


def test_train_images_are_decoded_once_into_one_shared_buffer(tmp_path, caplog):
    items = write_jpegs(tmp_path, [(50, 40), (33, 61), (64, 64)])
    sources = [item.source for item in items]
    with caplog.at_level(logging.INFO):
        images = decode_all(sources, open_rgb, budget_gb=1)
    assert isinstance(images, DecodedImages)
    assert images.pixels.is_shared()
    assert images.pixels.numel() == 3 * (50 * 40 + 33 * 61 + 64 * 64)
    assert "decoded 3 train images once" in caplog.text
    for i, source in enumerate(sources):
        assert torch.equal(images[i], torch.from_numpy(np.array(Image.open(source).convert("RGB"))))

    with caplog.at_level(logging.WARNING):
        fallback = decode_all(sources, open_rgb, budget_gb=1e-6)
    assert isinstance(fallback, DecodeOnRead)
    assert "above --decode_budget_gb" in caplog.text
    assert all(torch.equal(fallback[i], images[i]) for i in range(3))


def test_the_memory_budget_fallback_trains_the_same_weights(tiny_argv, tmp_path):
    from safetensors.torch import load_file

    run = ["--n_iters", "1", "--lr", "1e-2"]
    main.main(tiny_argv(*run, "--save_path", str(tmp_path / "once")))
    main.main(tiny_argv(*run, "--save_path", str(tmp_path / "per_step"), "--decode_budget_gb", "0"))
    [a], [b] = (list((tmp_path / name).rglob("adapter_model.safetensors")) for name in ("once", "per_step"))
    once, per_step = load_file(a), load_file(b)
    assert all(torch.equal(once[k], per_step[k]) for k in once)
