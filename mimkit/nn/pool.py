"""Pooling a token sequence with a class position first into one vector per image."""
import torch

POOLS = ("cls", "mean")


def pool_tokens(hidden: torch.Tensor, pool: str) -> torch.Tensor:
    """hidden (N, 1 + L, D), class position first -> (N, D): the class position (pool="cls") or
    the mean of the L other tokens (pool="mean")."""
    if pool == "cls":
        return hidden[:, 0]
    if pool == "mean":
        return hidden[:, 1:].mean(dim=1)
    raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
