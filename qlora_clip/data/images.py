"""The one way a dataset's images are opened and made 8-bit RGB (`open_rgb`, `to_rgb`).

The training, the test images and check_data.py all decode through it, so the checker refuses
exactly what a run would.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from qlora_clip.errors import UserError

# Images above this many pixels are refused, naming the file: a decompression bomb, or an image
# far larger than a 224-pixel crop needs. PIL's own check has the same default, but its warning
# and error do not say which file, so ours replaces it. QLORA_CLIP_MAX_IMAGE_PIXELS overrides the
# limit (0: none); it is read from the environment so DataLoader workers and check_data.py's
# processes see the same value.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_PIXELS_VARIABLE = "QLORA_CLIP_MAX_IMAGE_PIXELS"
Image.MAX_IMAGE_PIXELS = None
# Grey modes that convert("RGB") clips at 255 instead of scaling (PIL's 16-bit modes, and 32-bit
# integers, which 16-bit PNGs and TIFFs also open as): scaled from 16 bits to 8 here.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImage(UserError):
    """An image that does not decode, or that the loader refuses; the message names the file."""


class MissingImage(UnreadableImage):
    """An image a split lists that is not on disk."""



def open_rgb(path: Any) -> Image.Image:
    """The image file at `path`, decoded, as 8-bit RGB; an UnreadableImage naming the file if it cannot be."""
    with _naming_the_file(path), Image.open(path) as image:
        check_pixel_count(image, path)
        image.load()  # decode now, while the file is open and a failure can name it
        return to_rgb(image, path)


def image_size(path: Any) -> tuple[int, int]:
    """(height, width) of an image file from its header alone, refusing what open_rgb would refuse for its size."""
    with _naming_the_file(path), Image.open(path) as image:
        check_pixel_count(image, path)
        return image.height, image.width


def to_rgb(image: Image.Image, source: Any) -> Image.Image:
    """8-bit RGB: 16-bit grey scaled (not clipped) to 8 bits; floating-point grey refused (no known range)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray(_sixteen_to_eight_bits(np.asarray(image), image.mode, source)).convert("RGB")
    if image.mode == "F":
        raise UnreadableImage(f"{source}: 32-bit floating-point pixels (PIL mode F) have no fixed range to scale to "
                              "8 bits; save the image with 8 or 16 bits per channel, or remove it")
    return image.convert("RGB")


def _sixteen_to_eight_bits(pixels: np.ndarray, mode: str, source: Any) -> np.ndarray:
    if pixels.min() < 0 or pixels.max() > 65535:
        raise UnreadableImage(f"{source}: {mode} pixels from {pixels.min()} to {pixels.max()} are not 16-bit "
                              "values, so their range is unknown; save the image with 8 or 16 bits per channel, "
                              "or remove it")
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)


def max_image_pixels() -> int | None:
    """The pixel limit of one image (QLORA_CLIP_MAX_IMAGE_PIXELS, default PIL's), None for no limit."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise UserError(f"{MAX_PIXELS_VARIABLE}={value!r}: give a whole number of pixels (0: no limit)") from None
    return limit if limit > 0 else None


def check_pixel_count(image: Image.Image, source: Any) -> None:
    limit = max_image_pixels()
    pixels = image.width * image.height
    if limit is not None and pixels > limit:
        raise UnreadableImage(f"{source}: {image.width}x{image.height} = {pixels:,} pixels, above the limit of "
                              f"{limit:,} that guards against decompression bombs; remove or shrink the image, or "
                              f"allow it with {MAX_PIXELS_VARIABLE}={pixels} (0: no limit)")


@contextmanager
def _naming_the_file(path: Any) -> Iterator[None]:
    """Any failure to read or decode the image becomes one UnreadableImage that names the file."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError:
        raise MissingImage(f"{path}: image not found; restore it, or check the dataset with check_data.py") from None
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... on bad files
        raise UnreadableImage(f"{path}: cannot decode this image ({type(err).__name__}: {err}); replace or remove "
                              "the file (check_data.py lists every such file)") from err
