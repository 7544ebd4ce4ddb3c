"""Tile image batches into one picture."""
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MimkitError


def image_grid(columns: list[torch.Tensor], pad: int = 2, scale: int = 1, pad_value: float = 1.0) -> Image.Image:
    """Column j of the picture is batch `columns[j]` (N, C, H, W) in [0, 1]; row i is sample i.

    Grey (C=1) stays grey, C=3 is RGB; `scale` enlarges every pixel (nearest) for tiny images.
    """
    n, c, h, w = columns[0].shape
    if any(col.shape != columns[0].shape for col in columns):
        raise ValueError("all columns of a grid need the same shape")
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = torch.full((c, n * cell_h + pad, len(columns) * cell_w + pad), pad_value)
    for j, col in enumerate(columns):
        col = col.detach().float().cpu().clamp(0, 1)
        if scale > 1:
            col = col.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        for i in range(n):
            top, left = pad + i * cell_h, pad + j * cell_w
            canvas[:, top:top + h * scale, left:left + w * scale] = col[i]
    array = (canvas.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array[..., 0] if c == 1 else array, mode="L" if c == 1 else "RGB")


PICTURE_FORMATS = {  # suffix -> (PIL format, save options)
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"lossless": True}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
}
PICTURES_DIR = "pictures"  # RUN/pictures: the training callbacks' folder, which mimkit creates


def picture_format(path: str | Path) -> tuple[str, dict]:
    """(PIL format, save options) picked by the suffix of `path` (any case); MimkitError for
    another or no suffix."""
    path = Path(path)
    if path.suffix.lower() not in PICTURE_FORMATS:
        raise MimkitError(f"cannot write picture {path}: the suffix must be one of {', '.join(PICTURE_FORMATS)} "
                          "(it picks the format)")
    return PICTURE_FORMATS[path.suffix.lower()]


def check_picture_path(path: str | Path) -> Path:
    """`path` as a Path if a picture can be written there: a known suffix (see PICTURE_FORMATS) in an
    existing folder (none is created); MimkitError otherwise. Commands call it before any work."""
    path = Path(path)
    picture_format(path)
    if "\x00" in str(path):
        raise MimkitError(f"picture path {str(path)!r} holds a NUL character; choose another --out")
    if not path.parent.is_dir():
        raise MimkitError(f"folder {path.parent} does not exist; create it first or choose another --out")
    return path


def save_grid(image: Image.Image, path: str | Path) -> Path:
    """Save `image` in the format its suffix picks (grey stays grey, except in WebP which has no
    grey); the file appears only when complete (temp + rename). See check_picture_path."""
    path = check_picture_path(path)
    fmt, options = picture_format(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format=fmt, **options)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise MimkitError(f"cannot write picture {path}: {err.strerror or err}") from None
    return path


def save_run_picture(image: Image.Image, run_dir: str | Path, name: str) -> Path:
    """save_grid into RUN/pictures/NAME, creating RUN/pictures (the folder mimkit owns in a run)."""
    folder = Path(run_dir) / PICTURES_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MimkitError(f"cannot create {folder}: {err.strerror or err}") from None
    return save_grid(image, folder / name)


def tile(images: torch.Tensor, columns: int) -> list[torch.Tensor]:
    """(N, C, H, W) -> the `image_grid` columns of a row-major tiling, `columns` per row (blank
    cells are white)."""
    rows = math.ceil(images.shape[0] / columns)
    blank = torch.ones(rows * columns - images.shape[0], *images.shape[1:], device=images.device)
    cells = torch.cat([images, blank]).reshape(rows, columns, *images.shape[1:])
    return [cells[:, j] for j in range(columns)]
