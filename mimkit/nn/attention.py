"""Multi-head self-attention with a fused qkv projection (timm / MAE key names qkv, proj)."""
import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear

# Below this sequence length the auto path uses plain attention on CPU. benchmarks/attention_paths.py
# measured SDPA faster at every length from 17 to 257 (forward+backward) on this CPU, so 0.
CPU_MATH_MAX_LEN = 0


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """(N, H, L, d) x3 -> (N, H, L, d): softmax(q k^T / sqrt(d)) v, written out."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    if dropout > 0:
        attn = F.dropout(attn, dropout)
    return attn @ v


class Attention(nn.Module):
    """(N, L, D) -> (N, L, D).

    impl: "sdpa" (F.scaled_dot_product_attention), "plain" (written out) or "auto" (plain on
    CPU for sequences shorter than CPU_MATH_MAX_LEN, sdpa otherwise). Both give the same values.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, impl: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if impl not in ("auto", "sdpa", "plain"):
            raise ValueError(f"attention impl must be auto, sdpa or plain, got {impl!r}")
        self.num_heads = num_heads
        self.impl = impl
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def use_plain(self, x: torch.Tensor) -> bool:
        if self.impl == "auto":
            return x.device.type == "cpu" and x.shape[1] < CPU_MATH_MAX_LEN
        return self.impl == "plain"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        # Views of the (N, L, 3, H, d) qkv, so no copy: SDPA writes its output in q's memory
        # layout (N, L, H, d), which makes the reshape below a view too, and in backward the
        # stacked q/k/v gradients land directly in the (N, L, 3, H, d) layout of qkv's gradient.
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (N, H, L, d)
        drop = self.attn_drop if self.training else 0.0
        if self.use_plain(x):
            out = plain_attention(q, k, v, drop)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, length, dim)))
