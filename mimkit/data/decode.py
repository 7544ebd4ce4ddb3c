"""Decode one image file with PIL into a float (C, S, S) tensor, any PIL mode; the header checks
and the mode rule the datasets' uint8 views (mimkit.data.image_views) use too.

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

Pillow has its own bomb guard (Image.MAX_IMAGE_PIXELS, one value per process: a warning above it,
an error above twice it). While mimkit decodes, that guard follows `max_pixels` instead (see
`pillow_limit`): it is off while Image.open reads the header, so the header is judged by mimkit's
rule and message, then it is `max_pixels` while the pixels load (frames or tiles larger than the
header still stop), so neither its warning nor its error fires for an image mimkit accepts.
"""
import math
import os
import threading
from contextlib import contextmanager

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


class PillowLimit:
    """Lends Pillow's process-wide bomb limit (Image.MAX_IMAGE_PIXELS) to mimkit's decodes, thread safe.

    While requests are active the limit is the loosest of them (None: off), which is harmless to the
    others because each decode checks its own limit itself; when the last one ends the limit goes
    back to the value it had before the first (another library's own setting survives).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.active: list[float] = []  # one entry per request in flight; math.inf for None
        self.saved: int | None = None

    @contextmanager
    def __call__(self, pixels: int | None):
        """Within: Image.MAX_IMAGE_PIXELS is `pixels` (None: Pillow's check is off), or looser while
        other requests are active."""
        request = math.inf if pixels is None else pixels
        with self.lock:
            if not self.active:
                self.saved = Image.MAX_IMAGE_PIXELS
            self.active.append(request)
            self.apply()
        try:
            yield
        finally:
            with self.lock:
                self.active.remove(request)
                self.apply()

    def apply(self) -> None:
        """Set Pillow's limit to the loosest active request, or back to the saved value (lock held)."""
        if not self.active:
            Image.MAX_IMAGE_PIXELS = self.saved
            return
        loosest = max(self.active)
        Image.MAX_IMAGE_PIXELS = None if loosest == math.inf else int(loosest)


pillow_limit = PillowLimit()


def open_checked(path, max_pixels: int, min_side: int) -> Image.Image:
    """Image.open judged by `check_size` instead of Pillow's own guard (whose message would cite
    Pillow's limit, not data.max_image_pixels); only the header has been read when it returns."""
    with pillow_limit(None):
        img = Image.open(path)
    try:
        check_size(*img.size, max_pixels, min_side)
    except UnusableImage:
        img.close()
        raise
    return img


def decode_image(path: str | os.PathLike, channels: int, size: int, max_pixels: int = MAX_PIXELS,
                 min_side: int = 1) -> torch.Tensor:
    """Image file -> float32 (channels, size, size) in [0, 1].

    Raises whatever PIL raises for an unreadable file, UnusableImage for one outside the size
    limits (the caller decides raise vs skip), or DataError when the channel conversion is impossible.
    """
    with pillow_limit(max_pixels), open_checked(path, max_pixels, min_side) as img:
        img.draft(img.mode, (size, size))  # JPEG only: decode at the smallest scale >= size
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        array = pil_to_array(img)
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return fit_square(to_channels(images, channels, str(path))[None], size)[0].contiguous()


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    width, height = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: exif_transpose will not turn the image either
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
