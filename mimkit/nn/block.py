"""Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
import torch
from torch import nn

from .attention import Attention
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp


class Block(nn.Module):
    """(N, L, D) -> (N, L, D). Key names follow timm / MAE: norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2 (+ ls1.gamma, ls2.gamma when layer scale is on).

    layer_scale: None for none, else the initial value of the per-channel residual scale.
    drop_path: stochastic-depth rate of both residual branches.
    qv_bias: BEiT's attention biases (attn.q_bias, attn.v_bias, k bias zero); pass qkv_bias=False.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 layer_scale: float | None = None, drop_path: float = 0.0, dropout: float = 0.0,
                 attn_drop: float = 0.0, norm_eps: float = 1e-6, attn_impl: str = "auto", qv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=dropout, impl=attn_impl, qv_bias=qv_bias)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """attn_bias: optional additive attention bias (e.g. relative positions (H, L, L))."""
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_bias)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
