"""Photo-like JPEG files for the input pipeline's tests (decoding, augmentation, test-image caching)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from datasets import Item


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
