"""Crop boxes on the original image: the papers' RandomResizedCrop and the evaluation centre crop.

`random_resized_crop_box` is torchvision's RandomResizedCrop.get_params rule (the one MAE,
BEiT v2, MAGE and MaskGIT train with), drawn from a torch.Generator: up to 10 tries of
  area = uniform(scale) * W * H, aspect = exp(uniform(log ratio)),
  w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)),
accepted when 0 < w <= W and 0 < h <= H, placed uniformly; otherwise a centre crop of the whole
image with its aspect clamped to the ratio range.
`center_crop_box` is the evaluation transform (timm / MAE: resize the shorter side to S / crop_pct,
centre crop S) expressed as a box on the original; `center_crop_resize` is that transform on a PIL image.
"""
import math

import torch
from PIL import Image

CROP_PCT = 0.875


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float] = (0.2, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3),
                            generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a RandomResizedCrop box on a width x height image (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
            return left, top, w, h
    return fallback_box(width, height, ratio)


def fallback_box(width: int, height: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback: the whole image, its aspect clamped to `ratio`, centred."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, crop_pct: float = CROP_PCT) -> tuple[int, int, int, int]:
    """(left, top, side, side): the centred square that "resize the shorter side to S / crop_pct,
    then centre crop S" keeps, on the original image (side = round(crop_pct * shorter side))."""
    side = max(1, min(width, height, int(round(crop_pct * min(width, height)))))
    return (width - side) // 2, (height - side) // 2, side, side


def center_crop_resize(img: Image.Image, size: int, crop_pct: float = CROP_PCT,
                       resample: int = Image.BICUBIC) -> Image.Image:
    """The evaluation transform on a PIL image: resize the shorter side to floor(size / crop_pct)
    (timm's scale_size; the other side keeps the aspect, truncated), then centre crop size x size
    (torchvision's centre rule: offset round((side - size) / 2))."""
    short = int(math.floor(size / crop_pct))
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(new, resample)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    return img.crop((left, top, left + size, top + size))
