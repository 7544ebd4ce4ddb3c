"""Improved precision and recall of a generative model (Kynkäänniemi et al., NeurIPS 2019).

Each feature set approximates its manifold by the union of balls centred on its samples, the
radius of a sample being the distance to its k-th nearest neighbour in the same set (itself not
counted; k = 3 in the paper). Then

    precision = fraction of generated samples inside at least one ball of the real set
    recall    = fraction of real samples inside at least one ball of the generated set

"Inside" includes the boundary (distance <= radius). Distances are Euclidean, computed with
torch.cdist on chunks of rows, so memory is O(chunk_size * N) and never O(N^2).
"""
from dataclasses import dataclass

import torch

from .validation import chunk_rows


@dataclass
class PrecisionRecall:
    """precision and recall as fractions in [0, 1], with the neighbourhood size k used."""

    precision: float
    recall: float
    k: int


def _as_features(feats: torch.Tensor, which: str) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"{which} features must be a float tensor (N, D), got {shape}")
    return feats if feats.dtype in (torch.float32, torch.float64) else feats.float()


def knn_radii(feats: torch.Tensor, k: int = 3, chunk_size: int | None = None) -> torch.Tensor:
    """feats (N, D) -> (N,): the distance of each sample to its k-th nearest other sample.

    A duplicate of a sample counts as a neighbour at distance 0. Needs N > k.
    """
    feats = _as_features(feats, "the")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if len(feats) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(feats)}")
    chunk = chunk_rows(len(feats), chunk_size)
    radii = []
    for start in range(0, len(feats), chunk):
        dist = torch.cdist(feats[start:start + chunk], feats)  # (B, N)
        # the (k+1)-th smallest: the smallest is the sample itself (distance 0)
        radii.append(dist.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def inside_balls(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                 chunk_size: int | None = None) -> torch.Tensor:
    """queries (M, D), centres (N, D), radii (N,) -> bool (M,): whether each query lies within
    distance radii[j] of some centre j."""
    chunk = chunk_rows(len(centres), chunk_size)
    inside = []
    for start in range(0, len(queries), chunk):
        dist = torch.cdist(queries[start:start + chunk], centres)  # (B, N)
        inside.append((dist <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, generated: torch.Tensor, k: int = 3,
                     chunk_size: int | None = None) -> PrecisionRecall:
    """Improved precision and recall of `generated` (M, D) against `real` (N, D) features.

    Both sets need more than k samples; they are compared on the real features' device in the
    wider of their float dtypes (at least float32). chunk_size: rows per distance block (default
    keeps a block near 16M elements).
    """
    real = _as_features(real, "real")
    generated = _as_features(generated, "generated")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"real features are {real.shape[1]}-d but generated features are "
                         f"{generated.shape[1]}-d; compute both with the same feature network")
    dtype = torch.promote_types(real.dtype, generated.dtype)
    real, generated = real.to(dtype), generated.to(real.device, dtype)
    real_radii = knn_radii(real, k, chunk_size)
    generated_radii = knn_radii(generated, k, chunk_size)
    precision = inside_balls(generated, real, real_radii, chunk_size).double().mean()
    recall = inside_balls(real, generated, generated_radii, chunk_size).double().mean()
    return PrecisionRecall(precision=float(precision), recall=float(recall), k=k)
