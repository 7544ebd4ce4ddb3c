"""The output layer of masked token models, tied to the input token embedding (MaskGIT, MAGE)."""
import torch
import torch.nn.functional as F
from torch import nn


class TiedTokenHead(nn.Module):
    """hidden (..., in_dim) -> logits (..., V) against the first V rows of a shared embedding table.

    Linear(in_dim, D) -> GELU -> LayerNorm(D), then a dot product with each token's input
    embedding (D-dim) plus a per-token bias: BERT's masked-LM layer, as in MaskGIT's and MAGE's
    code (MAGE's decoder is narrower or wider than the table, hence in_dim). Rows of the table
    beyond V (the [MASK] id) are never predicted.
    """

    def __init__(self, in_dim: int, dim: int, vocab_size: int, norm_eps: float = 1e-6):
        super().__init__()
        self.vocab_size = vocab_size
        self.dense = nn.Linear(in_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding_table: torch.Tensor) -> torch.Tensor:
        """hidden (..., in_dim), embedding_table (>= V, D) -> logits (..., V)."""
        h = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(h, embedding_table[: self.vocab_size], self.bias)
