"""Batched training augmentation on tensors (any device): RandomResizedCrop + horizontal flip.

Built on kornia (no torchvision needed). kornia draws its parameters from torch's global CPU RNG,
so saving/restoring torch.get_rng_state() reproduces the augmentation exactly.
"""
from collections.abc import Callable
from contextlib import contextmanager

import torch

from .config import DataConfig


class BatchAugment:
    """(N, C, H, W) float in [0, 1] -> (N, C, size, size) float in [0, 1], a fresh draw per image.

    Crop: area fraction in `scale`, aspect ratio (w/h) log-uniform in `ratio`, resized bicubic
    (half-pixel grid, like torchvision) and clamped to [0, 1] against bicubic overshoot.
    Flip: each image mirrored left-right with probability `hflip_p`.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip_p: float = 0.5):
        import kornia.augmentation as K  # ~0.6 s import: only when a run augments

        self.crop = K.RandomResizedCrop((size, size), scale=tuple(scale), ratio=tuple(ratio),
                                        resample="bicubic", align_corners=False, cropping_mode="slice")
        self.flip = K.RandomHorizontalFlip(p=hflip_p) if hflip_p > 0 else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = self.crop(images).clamp_(0, 1)
        return self.flip(images) if self.flip is not None else images


def identity(images: torch.Tensor) -> torch.Tensor:
    return images


def augments_itself(dataset) -> bool:
    """True when `dataset` crops and flips its items itself (a decoded source built for training:
    image folder, tar shards, HF rows; mimkit.data.image_items)."""
    return bool(getattr(dataset, "augments_itself", False))


@contextmanager
def unaugmented(dataset):
    """Within: a dataset that augments itself serves plain items (statistics, pictures)."""
    if not augments_itself(dataset):
        yield dataset
        return
    dataset.augment = False
    try:
        yield dataset
    finally:
        dataset.augment = True


def build_augment(cfg: DataConfig, dataset=None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The training augmentation of `cfg`: BatchAugment(image_size, crop_scale, crop_ratio,
    0.5 if hflip else 0), or the identity when cfg.augment is False; None (the Trainer leaves the
    batch alone, a second view included) when `dataset` augments its items itself (on the original
    images, see mimkit.data.folder.ImageFolder)."""
    cfg.validate("data")
    if augments_itself(dataset):
        return None
    if not cfg.augment:
        return identity
    return BatchAugment(cfg.image_size, cfg.crop_scale, cfg.crop_ratio, 0.5 if cfg.hflip else 0.0)
