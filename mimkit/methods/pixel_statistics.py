"""How pixel models normalise their [0, 1] input: per-channel mean / std from the config.

A config with `in_chans`, `pixel_mean` and `pixel_std` (one value per channel, or one for all) is
checked by `check_pixel_statistics` and turned into non-persistent buffers by
`register_pixel_statistics`. Empty values are measured on the run's own images when a training run
starts (`mimkit.train.measure_pixel_statistics`, stored in the run's config.json), so no preset
carries another dataset's statistics; a model built directly from an empty config (no data at
hand) falls back to ImageNet's statistics for 3 channels and 0.5 / 0.5 otherwise.
"""
import torch
from torch import nn

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_pixel_statistics(config, prefix: str) -> None:
    """ConfigError naming the field when pixel_mean / pixel_std have a wrong length or std <= 0."""
    for name in ("pixel_mean", "pixel_std"):
        if len(getattr(config, name)) not in (0, 1, config.in_chans):
            raise ConfigError(f"{prefix}.{name} needs 1 or in_chans={config.in_chans} values, "
                              f"got {list(getattr(config, name))}")
    if config.pixel_std and min(config.pixel_std) <= 0:
        raise ConfigError(f"{prefix}.pixel_std must be positive, got {list(config.pixel_std)}")


def pixel_statistics(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a model normalises its [0, 1] input with; defaults as the module doc says."""
    if config.in_chans == 3:
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    else:
        default_mean, default_std = (0.5,) * config.in_chans, (0.5,) * config.in_chans
    return tuple(config.pixel_mean) or default_mean, tuple(config.pixel_std) or default_std


def register_pixel_statistics(module: nn.Module, config) -> None:
    """Buffers module.pixel_mean / module.pixel_std of shape (1, C or 1, 1, 1), not saved in state dicts."""
    mean, std = pixel_statistics(config)
    module.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
    module.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
