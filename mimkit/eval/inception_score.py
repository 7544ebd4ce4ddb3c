"""Inception Score (Salimans et al., 2016) from class probabilities.

    IS = exp(E_x KL(p(y|x) || p(y))),   p(y) = E_x p(y|x)

High when each image is confidently one class (low entropy p(y|x)) and the classes are spread
evenly (high entropy p(y)); it ranges from 1 to the number of classes C. As in the reference
code, the N samples are cut into `splits` consecutive parts, the score is computed on each (with
that part's own marginal p(y)), and the mean and the (population) standard deviation over the
parts are reported.
"""
import torch


def check_probabilities(probs: torch.Tensor, atol: float = 1e-3) -> None:
    """Raise ValueError unless probs is a float (N, C) tensor of non-negative rows summing to 1."""
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"class probabilities must be a float tensor (N, C), got {shape}")
    if len(probs) == 0:
        raise ValueError("class probabilities are empty")
    if (probs < 0).any() or not torch.isfinite(probs).all():
        raise ValueError("class probabilities must be finite and >= 0; pass softmax(logits), not logits")
    worst = (probs.double().sum(dim=1) - 1).abs().max().item()
    if worst > atol:
        raise ValueError(f"class probabilities must sum to 1 per row (off by up to {worst:.3g}); "
                         f"pass softmax(logits, dim=1)")


def split_score(probs: torch.Tensor) -> float:
    """exp(mean_i KL(p_i || mean_j p_j)) of probs (n, C) float64; 0 log 0 counts as 0."""
    marginal = probs.mean(dim=0, keepdim=True)  # (1, C)
    kl = (torch.xlogy(probs, probs) - torch.xlogy(probs, marginal)).sum(dim=1)  # (n,)
    return float(kl.mean().exp())


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """probs (N, C): rows p(y|x) (softmax outputs) -> (mean, std) of the IS over `splits` parts.

    The parts are consecutive slices of sizes differing by at most one (so pass samples in a
    random order when their order is structured). splits must be between 1 and N.
    """
    check_probabilities(probs)
    if not 1 <= splits <= len(probs):
        raise ValueError(f"splits must be between 1 and the number of samples {len(probs)}, got {splits}")
    p = probs.double()
    p = p / p.sum(dim=1, keepdim=True)  # exact normalisation of float32 softmax rows
    scores = torch.tensor([split_score(part) for part in p.tensor_split(splits)], dtype=torch.float64)
    return float(scores.mean()), float(scores.std(unbiased=False))
