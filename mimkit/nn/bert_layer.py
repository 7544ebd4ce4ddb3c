"""Post-LayerNorm transformer layer (BERT), as in google-research/maskgit's maskgit_transformer.py."""
import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .linear import Linear


class BertLayer(nn.Module):
    """(N, L, D) -> (N, L, D): h = norm1(x + drop(attn(x))), then norm2(h + drop(fc2(gelu(fc1(h))))).

    The official MaskGIT layer: LayerNorm after each residual sum (no norm before a branch), the
    tanh approximation of GELU (jax.nn.gelu's default), dropout on the attention weights
    (`attn_drop`) and once on each branch's output (`dropout`), none inside the MLP.
    Keys: attn.qkv, attn.proj, norm1, fc1, fc2, norm2.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0, attn_drop: float = 0.0,
                 norm_eps: float = 1e-12, attn_impl: str = "auto"):
        super().__init__()
        self.attn = Attention(dim, num_heads, qkv_bias=True, attn_drop=attn_drop, proj_drop=dropout, impl=attn_impl)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.fc1 = Linear(dim, mlp_dim)
        self.fc2 = Linear(mlp_dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x + self.attn(x))
        return self.norm2(h + self.drop(self.fc2(F.gelu(self.fc1(h), approximate="tanh"))))
