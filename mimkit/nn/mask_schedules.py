"""Mask schedules gamma(r) of MaskGIT and the variable mask-ratio sampler of MAGE.

gamma maps a progress r in [0, 1] to the fraction of tokens still masked, decreasing from 1 at
r = 0 to 0 at r = 1. Training masks ceil(gamma(r) * L) tokens for r ~ U(0, 1); decoding keeps
floor(gamma((t + 1) / T) * L_unknown) tokens masked after step t. "log" and "exp" depend on the
number of tokens (as in MaskGIT's code); the others do not.
"""
import math

import torch

SCHEDULES = ("cosine", "linear", "square", "cubic", "sqrt", "log", "exp")


def mask_fraction(schedule: str, r: torch.Tensor | float, total_tokens: int) -> torch.Tensor:
    """gamma_schedule(r): r (any shape, values in [0, 1]) -> masked fraction, same shape, in [0, 1].

    total_tokens: L, used by "log" (-log2(r) / log2 L) and "exp" (1 - 2^(-log2 L * (1 - r))).
    """
    r = torch.as_tensor(r, dtype=torch.float64)
    if schedule == "cosine":
        out = torch.cos(r * (math.pi / 2))
    elif schedule == "linear":
        out = 1 - r
    elif schedule == "square":
        out = 1 - r ** 2
    elif schedule == "cubic":
        out = 1 - r ** 3
    elif schedule == "sqrt":
        out = 1 - torch.sqrt(r)
    elif schedule == "log":
        out = -torch.log2(r) / math.log2(max(total_tokens, 2))
    elif schedule == "exp":
        out = 1 - torch.exp2(-math.log2(max(total_tokens, 2)) * (1 - r))
    else:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return out.clamp(0.0, 1.0)


def num_masked_for_training(schedule: str, r: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """r (N,) ~ U(0, 1) -> (N,) int64 counts ceil(gamma(r) * L), clamped to [1, L] so every
    sample has at least one token to predict."""
    counts = torch.ceil(mask_fraction(schedule, r, total_tokens) * total_tokens)
    return counts.clamp(1, total_tokens).long()


def truncated_normal_ratio(mean: float = 0.55, std: float = 0.25, low: float = 0.5, high: float = 1.0,
                           generator: torch.Generator | None = None) -> float:
    """One mask ratio from N(mean, std) truncated to [low, high] (MAGE: 0.55, 0.25, [0.5, 1]).

    Inverse-CDF sampling (exact, no rejection loop); std = 0 returns mean clamped to the range
    (MAGE's fixed-ratio ablation).
    """
    if not low <= high:
        raise ValueError(f"mask ratio range must have low <= high, got [{low}, {high}]")
    if std == 0:
        return float(min(max(mean, low), high))
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    lo, hi = normal.cdf(torch.tensor(low, dtype=torch.float64)), normal.cdf(torch.tensor(high, dtype=torch.float64))
    u = torch.rand((), dtype=torch.float64, generator=generator)
    return float(normal.icdf(lo + u * (hi - lo)).clamp(low, high))
