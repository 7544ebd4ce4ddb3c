"""One decoded image -> uint8 (C, S, S) views: the transform image folders, tar shards and HF rows share.

Training (a CropRecipe): per view a RandomResizedCrop box (mimkit.data.crops, torchvision's rule)
drawn on the whole image at full resolution, after EXIF orientation, then a left-right mirror with
probability 1/2 when recipe.hflip; the generator draws box, flip, box, flip... in that order.
Evaluation (no recipe): the centred square `center_crop_box(crop_pct)` keeps - the same pixels as
"resize the shorter side to S / crop_pct, centre crop S" (timm / MAE, 256 -> 224 at crop_pct 0.875).

Either way a JPEG is decoded at the smallest draft scale (1/2, 1/4, 1/8) whose boxes still have at
least S pixels a side, then only the box is cropped and resized to S x S with torch's antialiased
bicubic resize (half-pixel grid; within one step of 1/255 of PIL's, as torchvision's resize):
  - 8-bit L / RGB images (no transparency): resized in uint8 (torch's vectorised uint8 kernel,
    ~3x faster than PIL's on one core); grey -> C channels by repetition;
  - any other mode, or RGB -> grey: the crop converted to float by the mode rule of
    mimkit.data.decode, channels by mimkit.data.channels, resized in float, clamped and rounded.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .channels import to_channels
from .crops import CROP_PCT, center_crop_box, random_resized_crop_box
from .decode import oriented_size, pil_to_array

FAST_MODES = ("L", "RGB")  # resized in uint8


@dataclass(frozen=True)
class CropRecipe:
    """The training augmentation: RandomResizedCrop(scale, ratio) on the original, then hflip."""

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True


def plan_views(width: int, height: int, recipe: CropRecipe | None, views: int, generator: torch.Generator | None,
               crop_pct: float = CROP_PCT) -> list[tuple[tuple[int, int, int, int], bool]]:
    """[((left, top, w, h), mirror)] per view on a width x height image: random boxes and flips
    drawn from `generator` when `recipe` is given, else the one evaluation box, unmirrored."""
    if recipe is None:
        return [(center_crop_box(width, height, crop_pct), False)]
    plans = []
    for _ in range(views):
        box = random_resized_crop_box(width, height, recipe.scale, recipe.ratio, generator)
        plans.append((box, recipe.hflip and torch.rand(1, generator=generator).item() < 0.5))
    return plans


def draft_factor(w: int, h: int, size: int) -> int:
    """The largest JPEG draft reduction (8, 4, 2, else 1) that leaves a w x h box >= size a side."""
    return next((f for f in (8, 4, 2) if min(w, h) >= f * size), 1)


def image_views(img: Image.Image, channels: int, size: int, recipe: CropRecipe | None = None, views: int = 1,
                generator: torch.Generator | None = None, crop_pct: float = CROP_PCT,
                name: str = "image") -> list[torch.Tensor]:
    """An opened PIL image (header read, or already loaded) -> `views` uint8 (channels, size, size)
    tensors (one when `recipe` is None: the evaluation view); see the module docstring. `name`
    labels errors (DataError when the channel conversion is impossible)."""
    width, height = oriented_size(img)
    plans = plan_views(width, height, recipe, views, generator, crop_pct)
    factor = min(draft_factor(w, h, size) for (_, _, w, h), _ in plans)
    if factor > 1:  # a JPEG not yet loaded decodes at 1/factor; anything else ignores draft
        img.draft(img.mode, (img.size[0] // factor, img.size[1] // factor))
    img.load()
    ImageOps.exif_transpose(img, in_place=True)
    fast = img.mode in FAST_MODES and "transparency" not in img.info
    fx, fy = img.size[0] / width, img.size[1] / height  # 1 unless drafted
    out = []
    for (left, top, w, h), mirror in plans:
        x0, y0 = min(int(round(left * fx)), img.size[0] - 1), min(int(round(top * fy)), img.size[1] - 1)
        x1 = max(x0 + 1, min(int(round((left + w) * fx)), img.size[0]))
        y1 = max(y0 + 1, min(int(round((top + h) * fy)), img.size[1]))
        view = crop_to_uint8(img.crop((x0, y0, x1, y1)), channels, size, fast, name)
        out.append(view.flip(-1).contiguous() if mirror else view)
    return out


def crop_to_uint8(crop: Image.Image, channels: int, size: int, fast: bool, name: str) -> torch.Tensor:
    """A cropped PIL image -> uint8 (channels, size, size) (the two paths of the module docstring)."""
    if fast:
        array = np.array(crop)  # (h, w) or (h, w, 3) uint8, a writable copy
        tensor = torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)
        if tensor.shape[-2:] != (size, size):  # channels-last uint8: torch's fast path
            tensor = F.interpolate(tensor[None], size=(size, size), mode="bicubic", align_corners=False,
                                   antialias=True)[0]
        if tensor.shape[0] == channels or tensor.shape[0] == 1:  # grey repeats exactly in uint8
            return tensor.expand(channels, size, size).contiguous()
        return quantize(to_channels(tensor.float() / 255, channels, name))
    tensor = torch.from_numpy(np.ascontiguousarray(pil_to_array(crop))).permute(2, 0, 1)
    tensor = to_channels(tensor, channels, name)[None]
    if tensor.shape[-2:] != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return quantize(tensor[0])


def quantize(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (overshoot clamped) -> uint8, rounded to the nearest of 0..255."""
    return images.clamp(0, 1).mul_(255).round_().to(torch.uint8).contiguous()
