"""A dataset held in memory as uint8, with a batched fast path (no per-item Python loop)."""
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .channels import to_channels
from .resize import fit_square

CONVERT_CHUNK = 4096  # images converted at once when fitting size/channels (bounds float memory)


class InMemoryDataset(Dataset):
    """uint8 images (N, C, H, W) + int64 labels (N,) (or None = unknown).

    Channel conversion (mimkit.data.channels rule) and resizing to `image_size` (centre square,
    antialiased bicubic) happen once here, only when they change something.
    Items: {"images": float32 (C, S, S) in [0, 1], "labels": int64 0-d tensor, -1 when unknown}.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, image_size: int | None = None,
                 channels: int | None = None, classes: Sequence[str] | None = None, source: str = "images"):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels is not None and labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        c, h, w = images.shape[1:]
        size = image_size or h
        channels = channels or c
        if (c, h, w) != (channels, size, size):
            images = torch.cat([self.convert(chunk, channels, size, source)
                                for chunk in images.split(CONVERT_CHUNK)])
        self.images = images
        self.labels = labels.long() if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
        self.classes = list(classes) if classes is not None else None
        self.source = source
        self.total = len(images)  # images in the source before any subset (build_dataset sets it)

    @staticmethod
    def convert(chunk: torch.Tensor, channels: int, size: int, source: str) -> torch.Tensor:
        """uint8 (n, C, H, W) -> uint8 (n, channels, size, size)."""
        x = to_channels(chunk.float() / 255, channels, source)
        return fit_square(x, size).mul(255).round_().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index].float() / 255, "labels": self.labels[index]}

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """LongTensor (B,) -> {"images": float32 (B, C, S, S) in [0, 1], "labels": int64 (B,)}."""
        return {"images": self.images[indices].float().div_(255), "labels": self.labels[indices]}
