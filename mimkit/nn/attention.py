"""Multi-head self-attention with a fused qkv projection (timm / MAE key names qkv, proj).

Options for BEiT: q and v biases only (`qv_bias`: parameters q_bias, v_bias, k bias fixed at zero,
the qkv Linear without bias, as in BEiT's code) and an additive attention bias (e.g. the relative
position bias) passed to `forward`."""
import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear, linear

# Below this sequence length the auto path uses plain attention on CPU. benchmarks/attention_paths.py
# measured SDPA faster at every length from 17 to 257 (forward+backward) on this CPU, so 0.
CPU_MATH_MAX_LEN = 0


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, L, d) x3 -> (N, H, L, d): softmax(q k^T / sqrt(d) + bias) v, written out; bias is
    None or additive, broadcastable to (N, H, L, L)."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)
    if dropout > 0:
        attn = F.dropout(attn, dropout)
    return attn @ v


class Attention(nn.Module):
    """(N, L, D) -> (N, L, D).

    impl: "sdpa" (F.scaled_dot_product_attention), "plain" (written out) or "auto" (plain on
    CPU for sequences shorter than CPU_MATH_MAX_LEN, sdpa otherwise). Both give the same values.
    qkv_bias: a bias on all of q, k, v (qkv.bias). qv_bias: BEiT's q_bias and v_bias (D,) with the k
    bias fixed at zero and qkv without bias; needs qkv_bias=False.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, impl: str = "auto", qv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if impl not in ("auto", "sdpa", "plain"):
            raise ValueError(f"attention impl must be auto, sdpa or plain, got {impl!r}")
        if qkv_bias and qv_bias:
            raise ValueError("qkv_bias and qv_bias exclude each other: qv_bias replaces the qkv bias")
        self.num_heads = num_heads
        self.impl = impl
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def use_plain(self, x: torch.Tensor) -> bool:
        if self.impl == "auto":
            return x.device.type == "cpu" and x.shape[1] < CPU_MATH_MAX_LEN
        return self.impl == "plain"

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) -> (N, L, 3D): the fused q, k, v projection (with BEiT's [q_bias, 0, v_bias])."""
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        return linear(x, self.qkv.weight, bias)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, L, D); attn_bias: None or an additive bias on the attention logits, broadcastable
        to (N, H, L, L), e.g. a relative position bias (H, L, L)."""
        n, length, dim = x.shape
        qkv = self.project_qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        # Views of the (N, L, 3, H, d) qkv, so no copy: SDPA writes its output in q's memory
        # layout (N, L, H, d), which makes the reshape below a view too, and in backward the
        # stacked q/k/v gradients land directly in the (N, L, 3, H, d) layout of qkv's gradient.
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (N, H, L, d)
        drop = self.attn_drop if self.training else 0.0
        if self.use_plain(x):
            out = plain_attention(q, k, v, drop, attn_bias)
        else:
            mask = None if attn_bias is None else attn_bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, length, dim)))
