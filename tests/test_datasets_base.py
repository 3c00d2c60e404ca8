"""Images with more than 8 bits per pixel: scaled to 8 bits (not clipped to white), or refused, the
same way by the training, the test images and check_data.py."""
from __future__ import annotations

import dataset_trees as trees
import numpy as np
import pytest
import torch
from PIL import Image

import check_data
from datasets import build_dataset
from qlora_clip.data.images import UnreadableImage, open_rgb
from qlora_clip.inputs.train_images import decode_all

# A grey ramp over the whole 16-bit range: 0, 257, 514, ... 65535 are 0, 1, 2, ... 255 in 8 bits.
RAMP = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)


def sixteen_bit_png(path):
    Image.fromarray(RAMP).save(path)
    assert Image.open(path).mode == "I;16"
    return path


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    rgb = np.asarray(open_rgb(sixteen_bit_png(tmp_path / "ramp.png")))
    assert rgb.dtype == np.uint8
    assert rgb.shape == (16, 16, 3)
    assert np.array_equal(rgb[..., 0], np.arange(256).reshape(16, 16))
    assert (rgb[..., 0] == rgb[..., 2]).all()
    # What convert("RGB") alone gives: everything from 255/65535 up is white.
    assert (np.asarray(Image.open(tmp_path / "ramp.png").convert("RGB"))[..., 0] == 255).mean() > 0.99


def test_32_bit_integer_grey_with_16_bit_values_is_scaled_and_other_values_are_refused(tmp_path):
    Image.fromarray(RAMP.astype(np.int32)).save(tmp_path / "ramp.tif")
    assert Image.open(tmp_path / "ramp.tif").mode == "I"
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "ramp.tif"))[..., 1], np.arange(256).reshape(16, 16))
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(UnreadableImage, match=r"wide.tif: I pixels from 70000 to 70000 are not 16-bit"):
        open_rgb(tmp_path / "wide.tif")


def test_floating_point_grey_is_refused_naming_the_file(tmp_path):
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(tmp_path / "float.tif")
    with pytest.raises(UnreadableImage, match=r"float.tif: 32-bit floating-point pixels .* no fixed range"):
        open_rgb(tmp_path / "float.tif")


def test_the_train_images_get_the_same_pixels(tmp_path):
    images = decode_all([str(sixteen_bit_png(tmp_path / "ramp.png"))], open_rgb, budget_gb=1)
    assert torch.equal(images[0], torch.from_numpy(np.asarray(open_rgb(tmp_path / "ramp.png")).copy()))


def test_the_checker_agrees_with_the_loader(tmp_path):
    root = tmp_path / "mine"
    trees.write_folder_classes(root, {"cat": 4, "dog": 4})
    split = build_dataset("folder", root, shots=1, seed=1)
    sixteen, floating = split.test[0].source, split.train[0].source
    sixteen_bit_png(sixteen)  # replaces a PNG in place
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(floating, format="TIFF")  # a TIFF named .png
    report = check_data.check_dataset("folder", root, workers=1)
    assert report.status == "corrupt images"
    assert [path for path, _ in report.corrupt] == [floating]
    assert report.corrupt[0][1].startswith("32-bit floating-point pixels")
    open_rgb(sixteen)
    with pytest.raises(UnreadableImage):
        open_rgb(floating)
