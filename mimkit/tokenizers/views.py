"""The views of an image a token cache stores: identity, horizontal flip and seeded random crops.

A view is a deterministic function of the image (and, for crops, of a box drawn once per image
from a seeded generator), so a cache can be rebuilt bit for bit and its views checked against
`tokenizer.encode(view(images))`.

Crop boxes are RandomResizedCrop-style (area fraction in `scale`, aspect ratio w/h log-uniform
in `ratio`, 10 tries then the whole image), in fractions of the image side, followed by a
horizontal flip with probability 1/2; the crop is resized back to the full size by bilinear
sampling (`F.grid_sample`, half-pixel grid), batched over images.
"""
import math

import torch
import torch.nn.functional as F

BASE_VIEWS = ("identity", "hflip")
CROP_TRIES = 10


def crop_view_names(crops: int) -> tuple[str, ...]:
    """("crop0", "crop1", ...) for `crops` extra random-crop views."""
    return tuple(f"crop{i}" for i in range(crops))


def draw_crop_boxes(n: int, crops: int, seed: int, scale: tuple[float, float] = (0.8, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """(n, crops, 5) float32 boxes (x0, y0, w, h, flip) in fractions of the side, flip in {0, 1}.

    Drawn all at once from torch.Generator().manual_seed(seed) (the global RNG is untouched), so the
    boxes are a function of (n, crops, seed, scale, ratio) only, whatever the batch size.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (n, crops, CROP_TRIES)
    area = torch.empty(shape).uniform_(scale[0], scale[1], generator=g)
    log_r = torch.empty(shape).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    w = torch.sqrt(area * torch.exp(log_r))
    h = torch.sqrt(area / torch.exp(log_r))
    fits = (w <= 1) & (h <= 1)
    first = torch.where(fits.any(-1), fits.float().argmax(-1), torch.full(shape[:-1], -1))
    pick = first.clamp(min=0).unsqueeze(-1)
    w = torch.where(first >= 0, w.gather(-1, pick).squeeze(-1), torch.ones(shape[:-1]))
    h = torch.where(first >= 0, h.gather(-1, pick).squeeze(-1), torch.ones(shape[:-1]))
    x0 = torch.rand(shape[:-1], generator=g) * (1 - w)
    y0 = torch.rand(shape[:-1], generator=g) * (1 - h)
    flip = (torch.rand(shape[:-1], generator=g) < 0.5).float()
    return torch.stack([x0, y0, w, h, flip], dim=-1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """images (N, C, H, W), boxes (N, 5) (x0, y0, w, h, flip) -> (N, C, H, W): each box resized
    to the full size (bilinear, half-pixel grid), mirrored when flip = 1, clamped to [0, 1]."""
    n = len(images)
    x0, y0, w, h, flip = boxes.to(images.device, images.dtype).unbind(-1)
    sign = 1 - 2 * flip
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = w * sign                 # output x in [-1, 1] -> input x, mirrored when flipped
    theta[:, 0, 2] = 2 * x0 + w - 1           # centre of the box in normalised coordinates
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0, 1)


def apply_view(name: str, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """The view `name` ("identity", "hflip", "cropK") of images (N, C, H, W); crop views need the
    batch's boxes (N, crops, 5) from `draw_crop_boxes`."""
    if name == "identity":
        return images
    if name == "hflip":
        return images.flip(-1)
    if name.startswith("crop") and name[4:].isdigit():
        if boxes is None:
            raise ValueError(f"view {name!r} needs crop boxes")
        return crop_resize(images, boxes[:, int(name[4:])])
    raise ValueError(f"unknown view {name!r}; views: identity, hflip, crop0, crop1, ...")
