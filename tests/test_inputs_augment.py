"""qlora_clip/inputs/augment.py: augmentation on uint8 tensors by torchvision's law (same crops and flips for
the same seed, pixels within half a grey level of the PIL path)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from image_files import photo_like
from torchvision import transforms as T

from qlora_clip.inputs.augment import crop_box, random_resized_crop_flip


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
        assert ours.dtype == torch.uint8
        assert ours.shape == (3, 224, 224)
        differences.append((ours.float() - reference).abs().mean().item())
    assert max(differences) <= 0.5, differences
