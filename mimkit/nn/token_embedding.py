"""Input embedding of masked token models: [class token; image tokens] + learned positions."""
import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """tokens (N, L) int64 in [0, vocab), class rows (N,) -> (N, 1 + L, D).

    BERT-style, as in MaskGIT's and MAGE's code: a token table (codebook + [MASK]), a class table
    (the classes + one null / "fake class" row) whose row goes first, learned position
    embeddings, then LayerNorm and dropout. `tokens.weight` is also the table the tied output
    head predicts against.
    """

    def __init__(self, vocab_size: int, num_class_rows: int, length: int, dim: int, dropout: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.classes = nn.Embedding(num_class_rows, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + length, dim))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, class_rows: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.classes(class_rows).unsqueeze(1), self.tokens(tokens)], dim=1) + self.pos_embed
        return self.dropout(self.norm(x))
