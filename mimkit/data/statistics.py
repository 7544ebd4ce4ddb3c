"""Per-channel pixel mean and std of a dataset, measured on a seeded sample of its images: the
normalisation a pixel model uses when its config leaves pixel_mean / pixel_std empty."""
import torch

from .collate import SkippedItem
from .device_batch import images_to_float

IN_MEMORY_SAMPLE = 4096  # images read for the statistics of an in-memory dataset
DECODED_SAMPLE = 512  # ... of a dataset decoded on the fly (folders, shards, HF rows)


def measured_sample(dataset, seed: int = 0) -> torch.Tensor:
    """float (n, C, H, W) in [0, 1]: a seeded random sample of the dataset's readable images."""
    get_batch = getattr(dataset, "get_batch", None)
    size = len(dataset)
    count = min(size, IN_MEMORY_SAMPLE if get_batch is not None else DECODED_SAMPLE)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count].sort().values
    if get_batch is not None:
        return images_to_float(get_batch(order)["images"])
    items = [dataset[int(i)] for i in order]
    images = [item["images"] for item in items if not isinstance(item, SkippedItem)]
    return images_to_float(torch.stack(images)) if images else torch.zeros(0)


def pixel_statistics_of(dataset, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean per channel, std per channel, images measured) over a sample of `dataset` (un-augmented,
    at the size and channels it serves). Values are rounded to 4 decimals (they are stored in configs)."""
    images = measured_sample(dataset, seed)
    if images.numel() == 0:
        raise ValueError("no readable image to measure pixel statistics on")
    per_channel = images.double().transpose(0, 1).reshape(images.shape[1], -1)
    mean = per_channel.mean(dim=1)
    std = per_channel.std(dim=1).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std), len(images)
