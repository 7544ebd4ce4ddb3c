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
