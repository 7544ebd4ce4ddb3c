"""A separable Gaussian blur (two 1-D conv2d passes), used to soften compositing masks."""
import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, radius: int | None = None, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(2 radius + 1,) weights exp(-x^2 / (2 sigma^2)) summing to 1; radius defaults to ceil(3 sigma)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = math.ceil(3 * sigma) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """x (N, C, H, W) float -> the same shape blurred with a Gaussian of std `sigma` pixels.

    Borders are replicated (a mask touching the image border stays 1 there); each channel is
    blurred on its own (depthwise conv).
    """
    n, c, h, w = x.shape
    kernel = gaussian_kernel1d(sigma, radius, x.dtype, x.device)
    r = kernel.numel() // 2
    out = x.reshape(n * c, 1, h, w)
    out = F.conv2d(F.pad(out, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))  # along W
    out = F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))  # along H
    return out.reshape(n, c, h, w)
