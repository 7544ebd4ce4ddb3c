"""Convert images between channel counts by one documented rule.

Channel layouts by count: 1 = grey, 2 = grey + alpha, 3 = RGB, 4 = RGB + alpha.
  - alpha is composited on white: colour * a + (1 - a);
  - grey -> C channels by repeating it;
  - RGB -> 1 channel by luminance 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as PIL's "L").
Any other conversion is an error (say, 3 -> 2 channels or 5 -> 3).
"""
import torch

from ..errors import DataError

LUMA = (0.299, 0.587, 0.114)


def to_channels(images: torch.Tensor, channels: int, source: str = "images") -> torch.Tensor:
    """(..., C, H, W) float in [0, 1] -> (..., channels, H, W) float in [0, 1].

    Returns the input itself when C == channels. `source` names the data in errors.
    """
    c = images.shape[-3]
    if c == channels:
        return images
    if c in (2, 4):  # drop alpha by compositing on white
        colour, alpha = images[..., :-1, :, :], images[..., -1:, :, :]
        images, c = colour * alpha + (1 - alpha), c - 1
        if c == channels:
            return images
    if c == 1:
        return images.expand(*images.shape[:-3], channels, *images.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(3, 1, 1)
        return (images * luma).sum(dim=-3, keepdim=True).clamp_(0, 1)
    raise DataError(f"{source}: cannot convert {images.shape[-3]} channels to {channels}; "
                    f"supported: grey(+alpha) -> any, RGB(+alpha) -> 1 or 3")
