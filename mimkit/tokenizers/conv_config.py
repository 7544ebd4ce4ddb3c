"""What the two convolutional VQGAN configs (taming's VQGANConfig, MaskGITVQGANConfig) share: the
grid their channel_mult gives and the checks on it and on the perceptual loss's weights file.

A mixin with no fields: each config keeps its own fields and defaults (base_channels,
channel_mult, img_size, perceptual_weight, perceptual_path, ...) and calls these checks from its
validate().
"""
from ..errors import ConfigError


class ConvGridConfig:
    """Properties and checks for a config with img_size, channel_mult, perceptual_weight/_path."""

    @property
    def downsample_factor(self) -> int:
        """f = 2 ** (levels - 1): every level but the last halves the image side."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the code grid: img_size / f a side."""
        side = self.img_size // self.downsample_factor
        return side, side

    def validate_grid(self, prefix: str) -> None:
        """channel_mult positive, img_size a positive multiple of f."""
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"{prefix}.channel_mult needs one positive multiplier per level, got {list(self.channel_mult)}")
        f = self.downsample_factor
        if self.img_size <= 0 or self.img_size % f:
            raise ConfigError(f"{prefix}.img_size {self.img_size} must be a positive multiple of the downsampling "
                              f"factor f = 2 ** (len(channel_mult) - 1) = {f}")

    def validate_perceptual(self, prefix: str) -> None:
        """A perceptual weight needs a local weights file (nothing can be downloaded)."""
        if self.perceptual_weight > 0 and not self.perceptual_path:
            raise ConfigError(f"{prefix}.perceptual_weight={self.perceptual_weight} needs {prefix}.perceptual_path "
                              f"(a VGG16 / LPIPS weights file; none can be downloaded); set the path or "
                              f"{prefix}.perceptual_weight=0")
