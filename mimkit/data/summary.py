"""One line that says what a dataset is: its source, its size (and the subset drawn from it) and its classes."""
import torch

from .labels import known_labels

SHOWN_CLASSES = 12  # class counts listed by name; more are summarised


def describe_dataset(dataset, seed: int | None = None) -> str:
    """E.g. "data/val: 200 images, 4 classes (cat 50, dog 50, fox 50, owl 50)", with
    "random subset of 200 of 800 (seed 0), stratified by class" when only part of the source is used."""
    source = getattr(dataset, "source", type(dataset).__name__)
    n, total = len(dataset), getattr(dataset, "total", None)
    text = f"{source}: {n} images"
    labels = known_labels(dataset)
    labelled = labels is not None and len(labels) and int(labels.min()) >= 0
    if total is not None and total > n:
        kind = ", stratified by class" if labelled else ""
        text += f" (random subset of {n} of {total}{'' if seed is None else f', seed {seed}'}{kind})"
    if labels is None:
        return text + ", labels unknown until read"
    if not labelled:
        return text + ", unlabelled"
    classes, counts = torch.unique(labels, return_counts=True)
    names = getattr(dataset, "classes", None)
    pairs = [f"{names[c] if names and c < len(names) else c} {k}" for c, k in zip(classes.tolist(), counts.tolist())]
    shown = ", ".join(pairs[:SHOWN_CLASSES]) + (f", ... ({len(pairs) - SHOWN_CLASSES} more)"
                                                if len(pairs) > SHOWN_CLASSES else "")
    return text + f", {len(pairs)} classes ({shown})"
