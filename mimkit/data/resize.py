"""Fit images to a square side: centre square crop, then antialiased bicubic resize."""
import torch
import torch.nn.functional as F


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float in [0, 1] -> (N, C, size, size) float in [0, 1].

    Takes the centred min(H, W) square, then resizes it (bicubic, antialiased when shrinking,
    clamped back to [0, 1] against bicubic overshoot). This equals "resize the shorter side to
    `size`, then centre crop" up to a sub-pixel offset. Returns the input when already size x size.
    """
    h, w = images.shape[-2:]
    if h == w == size:
        return images
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top:top + side, left:left + side]
    if side != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False,
                               antialias=True).clamp_(0, 1)
    return images
