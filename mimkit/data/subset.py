"""A seeded random subset of a dataset (`data.limit`, `--limit`), stratified when it is labelled.

Taking the first N images of a sorted class folder keeps only the first classes (a probe then
reports the accuracy of an easier task); a random subset does not, and a stratified one keeps
every class in its own proportion. Indices are returned sorted, so a subset keeps the dataset's
order.
"""
import torch

from ..errors import ConfigError


def class_quotas(counts: torch.Tensor, limit: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images to keep per class: (K,) counts -> (K,) quotas summing to `limit` (< counts.sum()).

    Proportional to the counts with the largest remainders rounded up (ties, e.g. limit < K on
    balanced classes, broken at random with `generator`, not in class order); when limit >= K
    every class keeps at least one image (taken from the class with the largest quota).
    """
    share = counts.double() * limit / counts.sum()
    quotas = share.floor().long()
    leftover = limit - int(quotas.sum())
    shuffled = torch.randperm(len(counts), generator=generator)
    order = shuffled[torch.argsort((share - quotas)[shuffled], descending=True, stable=True)]
    quotas[order[:leftover]] += 1
    if limit >= len(counts):
        for k in torch.nonzero(quotas == 0).flatten().tolist():
            quotas[int(torch.argmax(quotas))] -= 1
            quotas[k] = 1
    return quotas


def subset_indices(labels: torch.Tensor | None, size: int, limit: int, seed: int = 0) -> torch.Tensor:
    """Sorted int64 indices of a seeded random subset of `limit` of `size` items.

    labels: (size,) int64 class ids, or None / any negative (-1 = unknown) for a plain random draw.
    Labelled data is drawn per class (see class_quotas). limit >= size keeps everything.
    """
    if limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if limit == 0 or limit >= size:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed)
    if labels is None or len(labels) == 0 or int(labels.min()) < 0:
        return torch.randperm(size, generator=generator)[:limit].sort().values
    classes, counts = torch.unique(labels, return_counts=True)
    picked = []
    for cls, quota in zip(classes.tolist(), class_quotas(counts, limit, generator).tolist()):
        members = torch.nonzero(labels == cls).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(picked).sort().values
