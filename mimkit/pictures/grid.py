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


def save_grid(image: Image.Image, path: str | Path) -> Path:
    """Save a PNG, creating the folder; the file appears only when complete (temp + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        image.save(tmp, format="PNG")
        tmp.replace(path)
    except OSError as err:
        raise MimkitError(f"cannot write picture {path}: {err.strerror or err}") from None
    return path


def tile(images: torch.Tensor, columns: int) -> list[torch.Tensor]:
    """(N, C, H, W) -> the `image_grid` columns of a row-major tiling, `columns` per row (blank
    cells are white)."""
    rows = math.ceil(images.shape[0] / columns)
    blank = torch.ones(rows * columns - images.shape[0], *images.shape[1:], device=images.device)
    cells = torch.cat([images, blank]).reshape(rows, columns, *images.shape[1:])
    return [cells[:, j] for j in range(columns)]
