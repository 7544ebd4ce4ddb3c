"""BERT's masked-LM output layer over a whole token table, as in google-research/maskgit's `MlmLayer`."""
import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


class BertMlmHead(nn.Module):
    """hidden (..., D), embedding table (V_all, D) -> logits (..., V_all).

    Linear(D, D) -> GELU (tanh approximation, jax.nn.gelu's default) -> LayerNorm, then a dot
    product with every row of the tied input table plus one bias per row (`bias`, V_all). The
    caller cuts the logits to the ids it can predict (MaskGIT: the codebook).
    """

    def __init__(self, dim: int, vocab_size: int, norm_eps: float = 1e-12):
        super().__init__()
        self.dense = Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding_table: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(hidden), approximate="tanh"))
        return F.linear(h, embedding_table, self.bias)
