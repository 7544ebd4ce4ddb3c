"""Which patches MAE keeps, as the noise `random_masking` sorts: random, block-wise or grid-wise
sampling (the three masking strategies of the MAE paper's Figure 6 / Table 1f).

`random_masking` keeps the `keep` patches of smallest noise; these functions give noise whose
`keep` smallest entries follow a strategy, with uniform noise inside each group to break ties.

- random: U(0, 1) noise, every patch equally likely.
- block: BEiT's block-wise masking hides exactly L - keep patches as a union of rectangles
  (area >= min_block, aspect in [0.3, 1/0.3]); the hidden ones get noise in [1, 2).
- grid: a regular grid keeps one patch of every 2x2 cell (at a random offset per image); its
  patches get noise in [0, 1), the others [1, 2). With 75% masking on an even grid this is the
  paper's grid sampling exactly; on an odd grid (7x7 Fashion-MNIST patches) the grid holds
  9-16 patches, so a random subset of it is kept, or it is topped up with random other patches.
"""
import torch

from .block_masking import block_masking

MASK_TYPES = ("random", "block", "grid")


def mask_noise(kind: str, n: int, grid_size: tuple[int, int], keep: int, *, min_block: int = 4,
               generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(N, L) float noise, L = gh * gw, whose `keep` smallest entries per row are the kept patches."""
    gh, gw = grid_size
    length = gh * gw
    noise = torch.rand(n, length, generator=generator)
    if kind == "random":
        pass
    elif kind == "block":
        hidden = block_masking(n, grid_size, length - keep, min_num_patches=min_block, generator=generator,
                               flat=True)
        noise = noise + hidden.float()
    elif kind == "grid":
        offsets = torch.randint(0, 2, (n, 2), generator=generator)
        rows = torch.arange(gh).view(1, gh, 1)
        cols = torch.arange(gw).view(1, 1, gw)
        on_grid = ((rows % 2) == offsets[:, 0].view(n, 1, 1)) & ((cols % 2) == offsets[:, 1].view(n, 1, 1))
        noise = noise + (~on_grid).reshape(n, length).float()
    else:
        raise ValueError(f"mask type must be one of {', '.join(MASK_TYPES)}, got {kind!r}")
    return noise.to(device) if device is not None else noise
