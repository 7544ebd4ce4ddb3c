"""Few-shot evaluation of frozen features: logistic regression on k labelled train images per class.

For each k and seed, k train images of every class are drawn (numpy Generator seeded with the
seed), the features are standardised with the mean / std of those k * C images, a scikit-learn
LogisticRegression (L2, lbfgs) is fit on them and scored on the whole test split. Features are
extracted once per model and reused for every k and seed: only the tiny classifier is refit.
"""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .comparison import ProbeProtocol
from .features import extract_split_features
from .validation import check_features


@dataclass
class FewShotRow:
    """Test top-1 (%) with k train images per class: per seed, and their mean and std."""

    shots: int
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    test_top1 = mean  # what `Comparison.gain` compares

    @property
    def std(self) -> float:
        """Sample std over seeds (ddof=1); 0 for a single seed."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def select_few_shot(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of exactly k samples of every class present in labels (N,), drawn without replacement.

    Raises DataError naming the class and k when a class has fewer than k samples.
    Returns: (k * C,) int64 indices, grouped by class in ascending class order.
    """
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < k:
            raise DataError(f"class {int(cls)} has only {len(members)} train images, fewer than k={k} shots; "
                            f"lower k (--shots) to at most {len(members)} or use more train images "
                            f"(e.g. a larger --limit)")
        picked.append(rng.choice(members, size=k, replace=False))
    return np.concatenate(picked).astype(np.int64)


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds must be a positive count or a non-empty list of seeds")
    return seeds


def _check_shots(shots: Sequence[int]) -> list[int]:
    shots = [int(k) for k in shots]
    if not shots or min(shots) < 1:
        raise ConfigError(f"shots must be a non-empty list of positive images per class, got {shots}")
    return shots


def fewshot_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                  test_labels: torch.Tensor, shots: Sequence[int] = (1, 5, 10, 25),
                  seeds: int | Iterable[int] = 5, *, C: float = 1.0, max_iter: int = 1000) -> list[FewShotRow]:
    """One `FewShotRow` per k in `shots` (in that order).

    Args:
        train_feats: (N, D) float; train_labels: (N,) int64 class ids. The pool the k per class
            are drawn from.
        test_feats: (M, D) float; test_labels: (M,) int64. Scored in full for every fit.
        shots: the k values (images per class).
        seeds: a count n (seeds 0..n-1) or explicit seeds; seed s draws with
            np.random.default_rng(s), so a seed picks the same images for the same labels.
        C, max_iter: LogisticRegression's inverse L2 strength and lbfgs iterations.
    """
    from sklearn.linear_model import LogisticRegression  # slow import, only when asked

    check_features(train_feats, train_labels, "train")
    check_features(test_feats, test_labels, "test")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(f"train features are {train_feats.shape[1]}-d but test features "
                         f"are {test_feats.shape[1]}-d")
    shots, seeds = _check_shots(shots), _seed_list(seeds)
    x_train, y_train = train_feats.double().numpy(), train_labels.numpy()
    x_test, y_test = test_feats.double().numpy(), test_labels.numpy()
    if len(np.unique(y_train)) < 2:
        raise DataError("few-shot evaluation needs at least 2 classes in the train split")
    select_few_shot(y_train, max(shots), np.random.default_rng(0))  # too few images for the largest k: fail now

    rows = []
    for k in shots:
        accuracies = []
        for seed in seeds:
            idx = select_few_shot(y_train, k, np.random.default_rng(seed))
            x = x_train[idx]
            mean, std = x.mean(0), x.std(0)
            std[std < 1e-12] = 1.0  # a constant dimension carries nothing; leave it at 0 instead of dividing by 0
            classifier = LogisticRegression(C=C, max_iter=max_iter)
            classifier.fit((x - mean) / std, y_train[idx])
            accuracies.append(100.0 * float((classifier.predict((x_test - mean) / std) == y_test).mean()))
        rows.append(FewShotRow(shots=k, accuracies=accuracies))
    return rows


class FewShot(ProbeProtocol):
    """`fewshot_probe` as a protocol of `mimkit.eval.comparison`: one row per k in `shots`, each
    model's features of both splits extracted once per pool and shared by every k and seed; both
    models see the same draws (same seeds)."""

    setting_column = "k"

    def __init__(self, shots: Sequence[int] = (1, 5, 10, 25), seeds: int | Iterable[int] = 5, *, C: float = 1.0,
                 max_iter: int = 1000, batch_size: int = 512, device=None, progress: bool = True):
        self.shots, self.seeds = _check_shots(shots), _seed_list(seeds)  # fail before the slow feature extraction
        self.C, self.max_iter, self.batch_size, self.device, self.progress = C, max_iter, batch_size, device, progress

    def run(self, model, train_set, test_set, pool: str) -> list[FewShotRow]:
        train, test = extract_split_features(model, train_set, test_set, pool=pool, batch_size=self.batch_size,
                                             device=self.device, progress=self.progress)
        return fewshot_probe(*train, *test, self.shots, self.seeds, C=self.C, max_iter=self.max_iter)

    def setting(self, result: FewShotRow) -> int:
        return result.shots

    def score_text(self, result: FewShotRow) -> str:
        return f"{result.mean:.2f} ± {result.std:.2f}"

    def title(self, rows: list) -> str:
        seeds = len(rows[0].pretrained.accuracies) if rows else len(self.seeds)
        return (f"few-shot test top-1 (%), logistic regression on k train images per class, mean ± std over "
                f"{seeds} seeds; pretrained vs the same architecture at random init")
