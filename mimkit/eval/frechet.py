"""Fréchet distance between two Gaussians fitted to feature sets: FID when the features come from
an Inception-v3 pool layer (Heusel et al., 2017), "FID with network X" for any other network.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The trace term is computed without the non-symmetric matrix S1 S2: with R = S1^(1/2) (the
symmetric PSD square root), S1 S2 = R (R S2) is similar to R S2 R, which is symmetric PSD, so
tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(R S2 R)). Both steps use `torch.linalg.eigh` in float64:
eigenvalues that round-off makes slightly negative (singular or rank-deficient covariances, e.g.
fewer samples than dimensions) are clamped to 0, so no eps*I offset and no complex values are
needed, unlike the usual scipy.linalg.sqrtm(S1 @ S2) route.
"""
import torch


def feature_statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (N, D) -> (mu (D,), sigma (D, D)) in float64 on the features' device: the mean and the
    unbiased (N - 1) covariance, as numpy.cov in the reference FID code."""
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"features must be a float tensor (N, D), got {shape}")
    if len(feats) < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {len(feats)}")
    x = feats.double()
    mu = x.mean(dim=0)
    centred = x - mu
    sigma = centred.T @ centred / (len(x) - 1)
    return mu, sigma


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root (D, D) -> (D, D) via eigh; negative round-off eigenvalues -> 0."""
    sym = (matrix + matrix.T) / 2
    eigvals, eigvecs = torch.linalg.eigh(sym)
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr((sigma1 sigma2)^(1/2)) for PSD (D, D) matrices, as a 0-d float64 tensor."""
    root = psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    eigvals = torch.linalg.eigvalsh((inner + inner.T) / 2)
    return eigvals.clamp_min(0).sqrt().sum()


def _check_statistics(mu: torch.Tensor, sigma: torch.Tensor, which: str) -> None:
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"statistics {which} must be mu (D,) and sigma (D, D), got {tuple(mu.shape)} "
                         f"and {tuple(sigma.shape)}")
    if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
        raise ValueError(f"statistics {which} contain NaN or inf; check the features they came from")


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    mu1, mu2: (D,); sigma1, sigma2: (D, D) covariances (symmetric PSD; they may be singular).
    Returns a float >= 0 (tiny negative round-off is clamped to 0); 0 for identical statistics.
    """
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(t).double() for t in (mu1, sigma1, mu2, sigma2))
    _check_statistics(mu1, sigma1, "1")
    _check_statistics(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two feature sets have different dimensions: {len(mu1)} and {len(mu2)}; "
                         f"compute both with the same feature network")
    sigma2 = sigma2.to(sigma1.device)
    diff = mu1 - mu2.to(mu1.device)
    value = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)
