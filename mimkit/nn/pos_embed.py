"""Fixed 2-D sine-cosine position embeddings (MAE layout: first half of the channels = column)."""
import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim): [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-2k/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """Position table for a (gh, gw) grid in row-major order -> (gh*gw [+1], dim), float32.

    The first dim/2 channels encode the column (w) index and the rest the row index, as in the
    official MAE code; the cls slot (when asked for) is all zeros.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    gh, gw = grid_size
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], 1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], 0)
    return emb.float()
