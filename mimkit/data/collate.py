"""Skip-aware batching: an unreadable image becomes a SkippedItem that collation drops.

The skipped paths travel with the batch (workers do not share memory with the main process),
so ResumableLoader can count them where the trainer can read them.
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SkippedItem:
    """Stands in for an item whose file could not be read (path: that file)."""

    path: str


def collate_skipping(items: list) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """Items (dicts of same-shaped tensors, or SkippedItem) -> (batch dict of stacked tensors, skipped paths).

    The batch is None when every item was skipped.
    """
    kept = [item for item in items if not isinstance(item, SkippedItem)]
    skipped = [item.path for item in items if isinstance(item, SkippedItem)]
    if not kept:
        return None, skipped
    return {key: torch.stack([item[key] for item in kept]) for key in kept[0]}, skipped


def note_skipped(dataset, paths: list[str]) -> None:
    """Add skipped paths to `dataset.skipped` (an ordered set kept by datasets that skip, e.g.
    ImageFolder) in the calling process, so a command can report them afterwards."""
    record = getattr(dataset, "skipped", None)
    if record is not None and paths:
        record.update(dict.fromkeys(paths))


def collate_readable(items: list, dataset) -> dict[str, torch.Tensor] | None:
    """collate_skipping for a reader in this process: the batch (None when all were skipped), the
    skipped paths noted on `dataset`."""
    batch, skipped = collate_skipping(items)
    note_skipped(dataset, skipped)
    return batch
