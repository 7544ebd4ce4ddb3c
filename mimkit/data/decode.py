"""Decode one image file with PIL into a float (C, S, S) tensor, any PIL mode.

Mode rule (then mimkit.data.channels.to_channels picks the requested channel count):
  1, L, LA, RGB, RGBA  -> their values / 255 (mode 1: 0 or 1);
  I;16*                -> / 65535 (16-bit grey);
  I                    -> / 65535, clipped to [0, 1] (how older Pillow opens 16-bit PNGs);
  F                    -> taken as [0, 1] and clipped;
  P, PA, CMYK, YCbCr, LAB, HSV, ... -> PIL's conversion to RGB, or RGBA when the image has
  transparency (CMYK -> RGB is R = (1 - C)(1 - K), ...).
EXIF orientation is applied first; JPEGs are decoded at reduced scale when much larger than S.

Before any pixel is decoded, the size in the header is checked: more than `max_pixels` pixels
(a decompression bomb: a small file that would decode to gigabytes) or a side shorter than
`min_side` (e.g. smaller than one patch) raises UnusableImage.
"""
import os

import numpy as np
import torch
from PIL import Image, ImageOps

from .channels import to_channels
from .resize import fit_square

DIRECT_MODES = ("L", "LA", "RGB", "RGBA")
MAX_PIXELS = 50_000_000


class UnusableImage(ValueError):
    """A readable image file that cannot be used: too many pixels or too small."""


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS, min_side: int = 1) -> None:
    """UnusableImage unless min_side <= width, height and width * height <= max_pixels."""
    if width * height > max_pixels:
        raise UnusableImage(f"{width}x{height} is {width * height / 1e6:.1f} megapixels, more than "
                            f"data.max_image_pixels={max_pixels} (decompression-bomb guard)")
    if min(width, height) < min_side:
        raise UnusableImage(f"{width}x{height} is smaller than {min_side}x{min_side} (one patch)")


def pil_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> float32 (H, W, C) in [0, 1], C in 1..4 (see the module rule)."""
    mode = img.mode
    if mode.startswith("I;16"):
        array = np.asarray(img).astype(np.float32) / 65535
    elif mode == "I":
        array = np.clip(np.asarray(img).astype(np.float32) / 65535, 0, 1)
    elif mode == "F":
        array = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    elif mode == "1":
        array = np.asarray(img).astype(np.float32)
    elif mode in DIRECT_MODES and "transparency" not in img.info:
        array = np.asarray(img).astype(np.float32) / 255
    else:
        target = "RGBA" if img.has_transparency_data else "RGB"
        array = np.asarray(img.convert(target)).astype(np.float32) / 255
    return array[:, :, None] if array.ndim == 2 else array


def decode_image(path: str | os.PathLike, channels: int, size: int, max_pixels: int = MAX_PIXELS,
                 min_side: int = 1) -> torch.Tensor:
    """Image file -> float32 (channels, size, size) in [0, 1].

    Raises whatever PIL raises for an unreadable file, UnusableImage for one outside the size
    limits (the caller decides raise vs skip), or DataError when the channel conversion is impossible.
    """
    with Image.open(path) as img:
        check_size(*img.size, max_pixels, min_side)
        img.draft(img.mode, (size, size))  # JPEG only: decode at the smallest scale >= size
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        array = pil_to_array(img)
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return fit_square(to_channels(images, channels, str(path))[None], size)[0].contiguous()
