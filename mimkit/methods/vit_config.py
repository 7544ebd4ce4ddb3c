"""The config fields and checks the transformer methods share.

`TransformerConfig`: the width and the blocks' details, shared by every transformer method (MAE,
BEiT v2, RevColV2, MaskGIT, MAGE). `ViTConfig` adds the patch grid and the pixel normalisation of
the methods that see pixels (MAE, BEiT v2, RevColV2). A method's config subclasses one, adds its
own fields and may give a field another default by declaring it again (a dataclass keeps the
field's place and takes the new default).
The checks below are called from each config's own `validate` (pixel_mean / pixel_std:
mimkit.methods.pixel_statistics.check_pixel_statistics).
"""
from dataclasses import dataclass

from ..errors import ConfigError
from ..nn import to_pair


@dataclass
class TransformerConfig:
    """embed_dim: the token width (ViT-B's by default); num_heads: attention heads; mlp_ratio: the
    MLP's hidden width / embed_dim; norm_eps: the LayerNorms' epsilon; attn_impl: see mimkit.nn.Attention."""

    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    attn_impl: str = "auto"


@dataclass
class ViTConfig(TransformerConfig):
    """img_size (int or (H, W)) is cut into patch_size x patch_size patches of in_chans channels;
    drop_path: the stochastic depth rate of the last block. Images enter in [0, 1] and are
    normalised with pixel_mean / pixel_std (one value per channel, or one for all; empty = measured
    on the run's own images when `mimkit.train` starts a run, see mimkit.methods.pixel_statistics)."""

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    drop_path: float = 0.0
    pixel_mean: tuple[float, ...] = ()
    pixel_std: tuple[float, ...] = ()

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w): patches per column and per row."""
        h, w = to_pair(self.img_size)
        return h // self.patch_size, w // self.patch_size


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
