"""The one place where image batches become float: uint8 items -> float32 in [0, 1] on the device.

Decoded sources (image folders, tar shards, HF rows) serve uint8 (C, S, S) items - 4x fewer bytes
from the data workers and through pinned memory than float32. Whoever consumes a batch or an item
(the Trainer, feature extraction, fine-tuning, token caches, pictures, pixel statistics) passes it
through `to_device_float`, which copies it to the device first (non_blocking: overlaps with
compute when the batch sits in pinned memory) and divides by 255 there, batched. Float images
(in-memory datasets) pass unchanged, so every consumer sees float [0, 1] whatever the source.

Floor 0 (imports torch only), so the token cache (floor 2) can use it too.
"""
import torch

IMAGE_KEYS = ("images", "images_2")


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 / 255 in [0, 1]; any float tensor is returned as it is."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images


def to_device_float(batch: dict, device: torch.device | str | None = None) -> dict:
    """A batch (or item) dict with every tensor on `device` (None: where it is) and its image keys
    ("images", "images_2") float32 in [0, 1]; the input dict is not changed. Anything but a dict is
    returned as it is (the caller's own checks name it)."""
    if not isinstance(batch, dict):
        return batch
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if device is not None:
                value = value.to(device, non_blocking=True)
            if key in IMAGE_KEYS:
                value = images_to_float(value)
        out[key] = value
    return out
