"""Few-shot logistic regression on frozen features: known answers on separable clusters and on noise,
the per-class draw, and the feature extraction done once per model."""
import argparse

import numpy as np
import pytest
import torch
from torch import nn

from mimkit.commands.evaluate import shot_list
from mimkit.errors import ConfigError, DataError
from mimkit.eval.comparison import compare_with_random_init, format_comparison_table
from mimkit.eval.fewshot import FewShot, fewshot_probe, select_few_shot


def clusters(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    """Gaussian clusters: centers 10 * N(0, I) in `dim` dims, within-class std `spread`."""
    g = torch.Generator().manual_seed(seed)
    centers = 10.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centers[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def test_separable_clusters_give_100_percent_at_every_k():
    train = clusters(30, 4, 8, spread=0.1, seed=0)
    test = clusters(50, 4, 8, spread=0.1, seed=1)
    rows = fewshot_probe(*train, *test, shots=(1, 2, 3, 4, 5), seeds=3)
    assert [r.shots for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert row.accuracies == [100.0] * 3 and row.mean == 100.0 and row.std == 0.0


def test_noise_features_give_chance():
    # Test labels are drawn independently of everything else, so every seed's accuracy is exactly
    # Binomial(2000, 1/4) / 2000: std 0.97 points; the bound of 6 points is > 6 sigma.
    g = torch.Generator().manual_seed(0)
    train_feats, train_labels = torch.randn(200, 16, generator=g), torch.arange(4).repeat(50)
    test_feats, test_labels = torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g)
    rows = fewshot_probe(train_feats, train_labels, test_feats, test_labels, shots=(1, 10), seeds=3)
    for row in rows:
        assert all(abs(acc - 25.0) < 6.0 for acc in row.accuracies), row.accuracies
        assert row.std > 0  # different draws give different classifiers


def test_draw_is_exactly_k_per_class_reproducible_and_seed_dependent():
    labels = np.repeat(np.arange(5), [12, 7, 9, 30, 5])
    draws = {seed: select_few_shot(labels, 5, np.random.default_rng(seed)) for seed in range(4)}
    for idx in draws.values():
        assert len(np.unique(idx)) == len(idx) == 25
        assert np.bincount(labels[idx], minlength=5).tolist() == [5] * 5
    assert np.array_equal(draws[0], select_few_shot(labels, 5, np.random.default_rng(0)))
    assert len({tuple(sorted(idx)) for idx in draws.values()}) == 4


def test_class_with_fewer_than_k_images_names_class_and_k():
    labels = np.repeat(np.arange(3), [10, 10, 3])
    with pytest.raises(DataError, match=r"class 2 has only 3 train images, fewer than k=5"):
        select_few_shot(labels, 5, np.random.default_rng(0))
    feats = torch.randn(23, 4)
    with pytest.raises(DataError, match=r"class 2 .* k=5"):
        fewshot_probe(feats, torch.from_numpy(labels), feats, torch.from_numpy(labels), shots=(1, 5), seeds=1)


def test_bad_shots_and_seeds():
    feats, labels = clusters(5, 2, 3, 0.1, 0)
    with pytest.raises(ConfigError, match="shots"):
        fewshot_probe(feats, labels, feats, labels, shots=(0,), seeds=1)
    with pytest.raises(ConfigError, match="seeds"):
        fewshot_probe(feats, labels, feats, labels, shots=(1,), seeds=0)
    assert shot_list("1,5,10,25") == (1, 5, 10, 25)
    for bad in ("1,,5", "0", "a"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated positive integers"):
            shot_list(bad)


class CountingEncoder(nn.Module):
    """features(images) = a fixed linear map of the flattened images; counts its calls."""

    def __init__(self, seed: int):
        super().__init__()
        self.proj = nn.Linear(16, 6)
        nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(seed))
        self.calls = 0

    def features(self, images, pool="cls"):
        self.calls += 1
        return self.proj(images.flatten(1))


def image_set(n_per_class: int, seed: int):
    feats, labels = clusters(n_per_class, 3, 16, spread=0.1, seed=seed)
    return [{"images": f.reshape(1, 4, 4), "labels": y} for f, y in zip(feats, labels)]


def test_compare_extracts_features_once_per_model_and_split():
    pretrained, random_init = CountingEncoder(0), CountingEncoder(1)
    protocol = FewShot(shots=(1, 2, 5), seeds=4, batch_size=64, progress=False)
    rows = compare_with_random_init(pretrained, random_init, protocol, image_set(10, 0), image_set(10, 1),
                                    method="toy")
    # One batch per split and model, reused for 3 k x 4 seeds.
    assert pretrained.calls == random_init.calls == 2
    assert [(r.pool, r.pretrained.shots, len(r.random.accuracies)) for r in rows] == [("cls", k, 4) for k in (1, 2, 5)]
    # Clusters stay separable through any injective linear map: both models score 100%.
    assert all(r.pretrained.mean == r.random.mean == 100.0 and r.gain == 0.0 for r in rows)
    table = format_comparison_table(rows, protocol)
    assert "over 4 seeds" in table and "100.00 ± 0.00" in table
