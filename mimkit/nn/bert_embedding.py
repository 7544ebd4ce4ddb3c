"""BERT's input embedding over one token table, as in google-research/maskgit's `Embed`."""
import torch
from torch import nn


class BertEmbedding(nn.Module):
    """ids (N, S) int64 in [0, vocab) -> (N, S, D): word + position embedding, LayerNorm, dropout.

    One table for everything the sequence holds (MaskGIT: codes, then class ids, [MASK] last);
    positions 0..S-1 with S <= `length`. `word_embeddings.weight` is also the table the tied
    output head (BertMlmHead) predicts against.
    """

    def __init__(self, vocab_size: int, length: int, dim: int, dropout: float = 0.0, norm_eps: float = 1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(length, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.position_embeddings.num_embeddings:
            raise ValueError(f"a sequence of {ids.shape[1]} ids is longer than the "
                             f"{self.position_embeddings.num_embeddings} learned positions")
        x = self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]]
        return self.dropout(self.norm(x))
