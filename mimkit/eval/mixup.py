"""Mixup and CutMix with label-smoothed soft targets, as in the MAE / BEiT fine-tuning recipe.

A batch is mixed with itself reversed (image i with image N-1-i, timm's "batch" mode):
  - mixup:  x_i <- lam * x_i + (1 - lam) * x_{N-1-i},  lam ~ Beta(mixup_alpha, mixup_alpha);
  - cutmix: a box of area ~(1 - lam) * H * W is pasted from x_{N-1-i} into x_i; lam is then
    corrected to the kept area 1 - box_area / (H * W) (the box is clipped at the border).
Targets: t_i = lam * s(y_i) + (1 - lam) * s(y_{N-1-i}) with s(y) the label-smoothed one-hot
vector (off = smoothing / C, on = 1 - smoothing + smoothing / C, PyTorch's label_smoothing).
With both alphas > 0 each batch uses cutmix with probability `switch_prob`, else mixup; a batch is
mixed at all with probability `prob` (otherwise lam = 1: plain smoothed targets).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """labels (N,) int64 -> (N, C) float: smoothing / C everywhere, 1 - smoothing + smoothing / C at the label."""
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def mixed_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """labels (N,) -> (N, C) soft targets lam * s(y_i) + (1 - lam) * s(y_{N-1-i})."""
    one_hot = smoothed_one_hot(labels, num_classes, smoothing)
    return lam * one_hot + (1.0 - lam) * one_hot.flip(0)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box (top, bottom, left, right) of sides ~ sqrt(1 - lam) * (H, W) around a uniform centre,
    clipped to the image (so it may be smaller near the border)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def paste_box(images: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, float]:
    """images (N, C, H, W) -> (images with the box taken from the reversed batch, kept-area lam)."""
    top, bottom, left, right = box
    out = images.clone()
    out[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
    height, width = images.shape[-2:]
    return out, 1.0 - (bottom - top) * (right - left) / (height * width)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c t_c log softmax(logits)_c; logits, targets (N, C)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class Mixup:
    """Callable (images (N, C, H, W), labels (N,)) -> (mixed images, soft targets (N, C)).

    Draws come from a numpy Generator seeded with `seed` (the global RNGs are not touched), so
    the same seed mixes the same batches the same way.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, seed: int = 0):
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not value >= 0:
                raise ConfigError(f"{name} must be >= 0 (0 = off), got {value}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mixup {name} must be in [0, 1], got {value}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if num_classes < 2:
            raise ConfigError(f"mixup needs at least 2 classes, got num_classes={num_classes}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.rng = np.random.default_rng(seed)

    @property
    def active(self) -> bool:
        """Whether any batch can be mixed (an alpha > 0 and prob > 0)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = 1.0
        if self.active and self.rng.random() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self.rng.random() < self.switch_prob)
            if use_cutmix:
                lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
                images, lam = paste_box(images, cutmix_box(*images.shape[-2:], lam, self.rng))
            else:
                lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
                images = lam * images + (1.0 - lam) * images.flip(0)
        return images, mixed_targets(labels, self.num_classes, lam, self.label_smoothing)
