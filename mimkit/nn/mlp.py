"""Two-layer transformer MLP (timm / MAE key names fc1, fc2)."""
import torch
from torch import nn

from .linear import Linear


class Mlp(nn.Module):
    """(..., D) -> (..., D) through a hidden layer of `hidden_dim` with GELU and optional dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
