"""A run's train images, decoded once into one shared uint8 buffer.

Few-shot train sets are small (404 images at 4-shot Caltech101; 16,000 at 16-shot ImageNet, about
10 GB decoded), and decoding a JPEG costs more than everything else the input pipeline does per
image. So the images are decoded once (PIL, qlora_clip.data.images.to_rgb: the pixels the per-step path gives),
in parallel, into one flat uint8 tensor in shared memory plus an index of offsets and shapes: the
DataLoader's worker processes share that one buffer instead of each holding copies. Above the
memory budget (--decode_budget_gb) the run decodes per step instead, with the same pixels.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from qlora_clip.data.images import image_size, to_rgb
from qlora_clip.errors import UserError

log = logging.getLogger(__name__)

GB = 1024 ** 3


def rgb_array(load_image: Callable[[Any], Image.Image], source: Any) -> np.ndarray:
    """One image as an HWC uint8 RGB array, exactly as the per-step path decodes it."""
    return np.asarray(to_rgb(load_image(source), source))


class DecodeOnRead:
    """The fallback: image i decoded from its source each time it is read."""

    def __init__(self, sources: Sequence[Any], load_image: Callable[[Any], Image.Image]):
        self.sources = list(sources)
        self.load_image = load_image

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(rgb_array(self.load_image, self.sources[index]).copy())


class DecodedImages:
    """Images as HWC uint8 views into one flat shared buffer."""

    def __init__(self, pixels: torch.Tensor, offsets: torch.Tensor, shapes: torch.Tensor):
        self.pixels = pixels    # flat uint8
        self.offsets = offsets  # int64 (N,): where image i starts
        self.shapes = shapes    # int64 (N, 2): height, width

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> torch.Tensor:
        height, width = self.shapes[index].tolist()
        start = int(self.offsets[index])
        return self.pixels[start:start + height * width * 3].view(height, width, 3)


def image_shape(source: Any, load_image: Callable[[Any], Image.Image]) -> tuple[int, int]:
    """(height, width) of an image; a file's from its header alone, without decoding it."""
    if isinstance(source, (str, os.PathLike)):
        return image_size(source)
    return rgb_array(load_image, source).shape[:2]


def decode_all(sources: Sequence[Any], load_image: Callable[[Any], Image.Image], budget_gb: float,
               threads: int | None = None) -> DecodedImages | DecodeOnRead:
    """Decode every image once into a shared buffer, or fall back to decoding per read above the budget.

    PIL releases the GIL while it decodes and converts, so threads decode in parallel.
    """
    threads = threads or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(threads) as pool:
        shapes = list(pool.map(lambda source: image_shape(source, load_image), sources))
    sizes = [height * width * 3 for height, width in shapes]
    total = sum(sizes)
    if total > budget_gb * GB:
        log.warning("the %d train images take %.2f GB decoded, above --decode_budget_gb %g: decoding them "
                    "at every step instead (slower; raise the budget if memory allows)",
                    len(sources), total / GB, budget_gb)
        return DecodeOnRead(sources, load_image)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    pixels = torch.empty(total, dtype=torch.uint8).share_memory_()
    flat = pixels.numpy()

    def fill(index: int) -> None:
        array = rgb_array(load_image, sources[index])
        if array.shape[:2] != shapes[index]:
            raise UserError(f"{sources[index]}: decodes to {array.shape[1]}x{array.shape[0]} pixels but its "
                            f"header says {shapes[index][1]}x{shapes[index][0]}; the file is damaged")
        flat[offsets[index]:offsets[index] + sizes[index]] = array.reshape(-1)

    with ThreadPoolExecutor(threads) as pool:
        for _ in tqdm(pool.map(fill, range(len(sources))), total=len(sources), desc="decoding train images",
                      leave=False, disable=None):
            pass
    log.info("decoded %d train images once: %.2f GB in shared memory", len(sources), total / GB)
    return DecodedImages(pixels, torch.from_numpy(offsets), torch.tensor(shapes, dtype=torch.int64).reshape(-1, 2))
