"""Per-channel learnable residual scale (CaiT / BEiT layer scale)."""
import torch
from torch import nn


class LayerScale(nn.Module):
    """(..., D) -> (..., D) * gamma, gamma initialised to `init` for every channel."""

    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
