"""Weighted k-nearest-neighbour classifier on frozen features (DINO's protocol, used by InstMAE).

Train and test features are l2-normalised, so the dot product is the cosine similarity s.
Each test point takes its k most similar train points; neighbour j votes for its class with
weight exp(s_j / T). The class with the largest summed weight wins (top-5 = the 5 largest).
Test points are processed in chunks, so memory is O(chunk_size * N_train), never
O(N_test * N_train).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .validation import check_features, chunk_rows, infer_num_classes


@dataclass
class KNNResult:
    """Accuracy of the weighted k-NN classifier, in percent (top5 is None below 5 classes)."""

    top1: float
    top5: float | None
    k: int
    temperature: float


def knn_score_chunks(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, *,
                     k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                     chunk_size: int | None = None, device=None):
    """Yield (start, scores (B, C)) over chunks of the test set.

    scores[i, c] = sum over the k nearest train points j of class c of exp(cos(test_i, train_j) / T).
    k is clamped to the number of train points.
    """
    check_features(train_feats, train_labels, "train")
    if test_feats.ndim != 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(f"test features must be (M, {train_feats.shape[1]}) like the train features, "
                         f"got {tuple(test_feats.shape)}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    num_classes = infer_num_classes(num_classes, train_labels)
    device = train_feats.device if device is None else torch.device(device)
    chunk_size = chunk_rows(len(train_feats), chunk_size)
    k = min(k, len(train_feats))

    bank = F.normalize(train_feats.to(device, torch.float32), dim=1)  # (N, D)
    bank_labels = train_labels.to(device)
    for start in range(0, len(test_feats), chunk_size):
        queries = F.normalize(test_feats[start:start + chunk_size].to(device, torch.float32), dim=1)  # (B, D)
        sims, idx = (queries @ bank.T).topk(k, dim=1)  # (B, k)
        weights = (sims / temperature).exp()  # (B, k)
        scores = torch.zeros(len(queries), num_classes, device=device)
        scores.scatter_add_(1, bank_labels[idx], weights)  # (B, C)
        yield start, scores


def knn_scores(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, *,
               k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
               chunk_size: int | None = None, device=None) -> torch.Tensor:
    """Class vote scores (M, C) of the weighted k-NN for test_feats (M, D) given train_feats (N, D)
    and train_labels (N,) int64. Predictions are `scores.argmax(1)`."""
    chunks = knn_score_chunks(train_feats, train_labels, test_feats, k=k, temperature=temperature,
                              num_classes=num_classes, chunk_size=chunk_size, device=device)
    return torch.cat([scores.cpu() for _, scores in chunks])


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, k: int = 20, temperature: float = 0.07,
                 num_classes: int | None = None, chunk_size: int | None = None, device=None,
                 progress: bool = False) -> KNNResult:
    """Top-1 (and top-5 when there are >= 5 classes) accuracy in % of the weighted k-NN.

    Top-5 counts a hit only among classes that received votes, so ties among zero-vote classes
    (fewer than 5 classes among the k neighbours) never decide it.

    Args:
        train_feats: (N, D) float; train_labels: (N,) int64.
        test_feats: (M, D) float; test_labels: (M,) int64.
        k: neighbours per test point (20 as in DINO; clamped to N).
        temperature: T in the vote weight exp(cos / T) (0.07 as in DINO).
        num_classes: default max label + 1 over train and test.
        chunk_size: test points per similarity block; default keeps a block near 16M floats.
        device: where to compute; default the train features' device.
    """
    check_features(test_feats, test_labels, "test")
    num_classes = infer_num_classes(num_classes, train_labels, test_labels)
    chunks = knn_score_chunks(train_feats, train_labels, test_feats, k=k, temperature=temperature,
                              num_classes=num_classes, chunk_size=chunk_size, device=device)
    total = -(-len(test_feats) // chunk_rows(len(train_feats), chunk_size))
    top1 = top5 = 0
    for start, scores in tqdm(chunks, total=total, desc="k-NN", disable=not progress, leave=False):
        target = test_labels[start:start + len(scores)].to(scores.device)
        ranked = scores.topk(min(5, num_classes), dim=1).indices  # (B, 5)
        voted = scores.gather(1, ranked) > 0  # a class nobody voted for is not a guess
        hits = (ranked == target[:, None]) & voted
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
    n = len(test_feats)
    return KNNResult(top1=100.0 * top1 / n, top5=100.0 * top5 / n if num_classes >= 5 else None,
                     k=min(k, len(train_feats)), temperature=temperature)
