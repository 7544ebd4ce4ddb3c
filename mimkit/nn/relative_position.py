"""BEiT's relative position bias: one learned bias per head for every (query, key) offset on the
patch grid, plus three entries for the class token (cls -> token, token -> cls, cls -> cls).

With a grid of Wh x Ww patches there are (2Wh - 1)(2Ww - 1) offsets; the table has 3 more rows.
Offset (dy, dx) = (y_q - y_k, x_q - x_k) is stored at row (dy + Wh - 1) * (2Ww - 1) + (dx + Ww - 1);
a class-token query (row 0 of the index) uses table row T - 3, a class-token key (column 0) row
T - 2, and the class token attending to itself row T - 1, where T is the table size.
"""
import torch
from torch import nn

from .patch_embed import to_pair


def relative_position_index(grid_size) -> torch.Tensor:
    """(Wh, Ww) -> (Wh*Ww + 1, Wh*Ww + 1) int64 rows of the bias table, the class token first,
    patches in row-major order."""
    wh, ww = to_pair(grid_size)
    num_offsets = (2 * wh - 1) * (2 * ww - 1)
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (L,) each
    dy = ys[:, None] - ys[None, :] + wh - 1  # (L, L) in [0, 2Wh - 2]
    dx = xs[:, None] - xs[None, :] + ww - 1
    length = wh * ww
    index = torch.empty(length + 1, length + 1, dtype=torch.long)
    index[1:, 1:] = dy * (2 * ww - 1) + dx
    index[0, :] = num_offsets      # cls -> token
    index[:, 0] = num_offsets + 1  # token -> cls
    index[0, 0] = num_offsets + 2  # cls -> cls
    return index


def relative_position_table_size(grid_size) -> int:
    """(2Wh - 1)(2Ww - 1) + 3 rows."""
    wh, ww = to_pair(grid_size)
    return (2 * wh - 1) * (2 * ww - 1) + 3


class RelativePositionBias(nn.Module):
    """() -> (H, L + 1, L + 1): the additive attention bias, shared by all blocks (BEiT's shared
    relative position bias). Keys as in BEiT: relative_position_bias_table (T, H), zeros at init,
    and the buffer relative_position_index (L + 1, L + 1)."""

    def __init__(self, grid_size, num_heads: int):
        super().__init__()
        self.grid_size = to_pair(grid_size)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(relative_position_table_size(self.grid_size), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.grid_size))

    def forward(self) -> torch.Tensor:
        length = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (L+1 * L+1, H)
        return bias.view(length, length, -1).permute(2, 0, 1).contiguous()
