"""The training augmentation on uint8 tensors: CLIP-LoRA's random resized crop and flip, fast.

The law is torchvision's `RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3))` followed by
`RandomHorizontalFlip(0.5)`: the crop box and the flip are drawn with the same random calls, in the
same order, from a generator seeded per image (batching.py), so for a seed they are exactly the
boxes and flips torchvision draws. The pixels differ only in the resampling: the crop is a slice of
the decoded image and the resize torch's antialiased bicubic kernel for uint8 (PIL's kernel,
a = -0.5), within about half a grey level of PIL on natural images (tests/test_inputs_augment.py),
at a fraction of the cost, and with no float copy of the full image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
FLIP_PROBABILITY = 0.5


def crop_box(height: int, width: int, generator: torch.Generator,
             scale: tuple[float, float] = SCALE) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop, drawn as torchvision's RandomResizedCrop draws it.

    `scale`: the crop's share of the image area; CLIP-LoRA's (0.08, 1) unless a method says otherwise
    (Tip-Adapter and LP++ crop with (0.5, 1), qlora_clip/baselines/views.py)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # Ten misses (very elongated images): the largest centred box with an allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        w, h = int(round(height * max(RATIO))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(image: torch.Tensor, size: int, generator: torch.Generator,
                             scale: tuple[float, float] = SCALE) -> torch.Tensor:
    """A `size` x `size` uint8 CHW crop of an HWC uint8 image, randomly flipped."""
    top, left, h, w = crop_box(image.shape[0], image.shape[1], generator, scale)
    crop = image[top:top + h, left:left + w].permute(2, 0, 1).unsqueeze(0)  # NCHW view, channels-last memory
    out = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)[0]
    if torch.rand(1, generator=generator).item() < FLIP_PROBABILITY:
        out = out.flip(-1)
    return out.contiguous()
