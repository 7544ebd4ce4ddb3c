"""What the two convolutional VQGANs (taming's VQGAN, the MaskGIT VQGAN) share, as two mixins with
no fields or modules of their own:

- ConvGridConfig (for their configs): the code grid channel_mult gives, the checks on it and on
  the perceptual loss's weights file; each config keeps its own fields and defaults and calls the
  checks from its validate().
- ConvTokenizerParts (for the models): the image check, the lazily loaded perceptual network,
  the training PSNR and `reconstruct` for pictures.
"""
import torch

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


class ConvTokenizerParts:
    """Methods for a VQTokenizer whose config is a ConvGridConfig with perceptual_weight/_path."""

    def check_images(self, images: torch.Tensor) -> None:
        """ValueError unless images are (N, in_chans, H, W) with H and W multiples of f."""
        c = self.config
        if images.ndim != 4 or images.shape[1] != c.in_chans or images.shape[-1] % c.downsample_factor \
                or images.shape[-2] % c.downsample_factor:
            raise ValueError(f"expected images (N, {c.in_chans}, H, W) with H, W multiples of "
                             f"{c.downsample_factor}, got {tuple(images.shape)}")

    def perceptual_network(self, device: torch.device):
        """The frozen LPIPS-style network (loaded from config.perceptual_path on first use), or None."""
        if self.config.perceptual_weight <= 0:
            return None
        net = self.external.get("perceptual")
        if net is None:
            from .perceptual import load_perceptual_network

            net = self.external["perceptual"] = load_perceptual_network(self.config.perceptual_path)
        if next(net.parameters()).device != device:
            net = self.external["perceptual"] = net.to(device)
        return net

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """For pictures: images (N, C, H, W) in [0, 1] -> {"original", "reconstruction"} (N, C, H, W)."""
        return {"original": images, "reconstruction": self.decode(self.encode(images))}


@torch.no_grad()
def mean_psnr(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean per-image PSNR (dB) of recon (N, C, H, W) in about [0, 1], clamped, against images in
    [0, 1] (= mimkit.eval.psnr; the tokenizer floor does not import the eval floor)."""
    mse = recon.detach().float().clamp(0, 1).sub(images.float()).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean()
