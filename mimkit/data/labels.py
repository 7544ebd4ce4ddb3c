"""The labels of a dataset known without decoding its images, and the checks of commands that need them."""
import torch

from ..errors import DataError


def known_labels(dataset) -> torch.Tensor | None:
    """(N,) int64 labels (-1 = unknown) read without decoding images, or None when they cannot be
    (tar shards are streamed)."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels
    rows, key = getattr(dataset, "rows", None), getattr(dataset, "label_key", None)
    if rows is not None:  # Hugging Face rows: one column read, no image decoded
        return torch.tensor(rows[key], dtype=torch.long) if key else torch.full((len(rows),), -1, dtype=torch.long)
    return None


def require_labels(dataset, role: str, what: str) -> torch.Tensor:
    """The labels of `dataset` (the `role` data, e.g. "train") for `what` (e.g. "the probes");
    DataError before any work when some or all of them are unknown."""
    labels = known_labels(dataset)
    source = getattr(dataset, "source", type(dataset).__name__)
    if labels is None:
        raise DataError(f"{what} need labelled {role} data, and the labels of {source} cannot be read up front "
                        "(streamed tar shards); give a labelled folder (class sub-folders) or an .npz with labels")
    unknown = int((labels < 0).sum())
    if unknown:
        kind = "has no labels" if unknown == len(labels) else f"has {unknown} images without a label"
        raise DataError(f"{what} need labelled {role} data, but {source} {kind} (a flat folder or arrays "
                        "without labels can be pretrained on, not probed); give labelled data: a folder of class "
                        "sub-folders or an .npz with labels, with --train-data / --test-data")
    return labels


def check_class_coverage(train_labels: torch.Tensor, test_labels: torch.Tensor, train_source: str,
                         test_source: str) -> None:
    """DataError unless the train labels hold at least 2 classes and every test class among them
    (a classifier cannot be trained on one class, nor score on a class it never saw)."""
    train_classes = set(torch.unique(train_labels).tolist())
    if len(train_classes) < 2:
        raise DataError(f"the train data {train_source} has {len(train_labels)} image(s) of {len(train_classes)} "
                        "class; a classifier needs at least 2 classes (use more images, e.g. a larger --limit)")
    unseen = sorted(set(torch.unique(test_labels).tolist()) - train_classes)
    if unseen:
        raise DataError(f"the test data {test_source} holds class(es) {unseen[:5]} that the train data {train_source} "
                        "has no image of (a larger --limit keeps every class); a classifier cannot predict them")
