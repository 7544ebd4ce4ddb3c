"""Config checks every ViT-based method shares: the mask ratio, the patch grid, width vs heads."""
from ..errors import ConfigError
from ..nn import to_pair


def check_mask_ratio(config, prefix: str) -> None:
    """ConfigError unless 0 <= config.mask_ratio < 1."""
    if not 0.0 <= config.mask_ratio < 1.0:
        raise ConfigError(f"{prefix}.mask_ratio must be in [0, 1), got {config.mask_ratio}")


def check_patch_grid(config, prefix: str) -> None:
    """ConfigError unless config.img_size (int or pair) is positive and divisible by config.patch_size."""
    sizes = to_pair(config.img_size)
    if min(sizes) <= 0 or config.patch_size <= 0 or any(s % config.patch_size for s in sizes):
        raise ConfigError(f"{prefix}.img_size {list(sizes)} must be positive and divisible by "
                          f"{prefix}.patch_size {config.patch_size}")


def check_width_heads(config, prefix: str, pairs=(("embed_dim", "num_heads"),)) -> None:
    """ConfigError unless every (width, heads) field pair is positive, the width divisible by 4
    (2-D sin-cos positions) and by the heads."""
    for dim, heads in pairs:
        d, h = getattr(config, dim), getattr(config, heads)
        if d <= 0 or h <= 0 or d % h or d % 4:
            raise ConfigError(f"{prefix}.{dim}={d} must be positive, divisible by 4 and by {prefix}.{heads}={h}")
