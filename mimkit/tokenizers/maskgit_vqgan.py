"""The MaskGIT VQGAN (Chang et al., CVPR 2022): the tokenizer MaskGIT trained and MAGE ships.

Not taming's VQGAN (vqgan.py): no attention anywhere, bias-free residual convolutions, 2x2 average
pooling to downsample, a 1x1 encoder `conv_out` straight to the code space (no quant_conv /
post_quant_conv), and images in [0, 1] on both sides (no shift to [-1, 1]). Its residual blocks keep
MaskGIT's quirk: when a block changes the width, the 1x1 shortcut is applied to the block's own
output (out -> out channels), not to its input (maskgit/nets/vqgan_tokenizer.py ResBlock; MAGE's
PyTorch port taming/modules/diffusionmodules/model.py does the same).

    model = MaskGITVQGAN(MaskGITVQGANConfig(img_size=32, in_chans=1, channel_mult=(1, 2, 2)))
    codes = model.encode(images)     # (N, C, H, W) in [0, 1] -> (N, h, w) int64
    images = model.decode(codes)     # -> (N, C, H, W) in [0, 1] (clamped)
    out = model(images)              # training: loss (maskgit_vqgan_loss.py) and logs

State-dict keys = MAGE's port (LTH14/mage, models_mage.py `vqgan.*` minus the prefix), with
B = base_channels, m = channel_mult, n = num_res_blocks, z = code_dim, levels i = 0 .. len(m) - 1:

    encoder.conv_in.weight                          (B, in_chans, 3, 3)       no bias
    encoder.down.{i}.block.{j}.norm1.{weight,bias}  j < n; GroupNorm(32, eps 1e-6)
    encoder.down.{i}.block.{j}.conv1.weight         (B*m[i], in, 3, 3)        no bias
    encoder.down.{i}.block.{j}.norm2.{weight,bias}
    encoder.down.{i}.block.{j}.conv2.weight         (B*m[i], B*m[i], 3, 3)    no bias
    encoder.down.{i}.block.0.nin_shortcut.weight    (B*m[i], B*m[i], 1, 1)    only when the width changes
    (encoder.down.{i}.downsample: average pooling, no tensors)
    encoder.mid.block_{k}.*                         k = 1 .. n, width B*m[-1]
    encoder.norm_out.{weight,bias}, encoder.conv_out.{weight,bias}   conv_out (z, B*m[-1], 1, 1)
    decoder.conv_in.{weight,bias}                   (B*m[-1], z, 3, 3)
    decoder.mid.block_{k}.*                         k = 1 .. n
    decoder.up.{i}.block.{j}.*                      j < n (not n + 1 as taming), width B*m[i]
    decoder.up.{i}.upsample.conv.{weight,bias}      i > 0: nearest x2, then (B*m[i], B*m[i], 3, 3)
    decoder.norm_out.{weight,bias}, decoder.conv_out.{weight,bias}   conv_out (in_chans, B*m[0], 3, 3)
    quantize.embedding.weight                       (codebook_size, z)
    loss.discriminator.main.*                       mimkit's training only (not in MAGE's files)
    train_steps, quantize.{initialized,steps,last_hit,last_reset}   mimkit bookkeeping

The middle has n blocks as in MaskGIT's flax code; MAGE's port hard-codes 2 (= its n).
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from .conv_blocks import Downsample, Level, Mid, Upsample, group_norm, swish
from .maskgit_vqgan_loss import MaskGITVQGANLoss
from .conv_shared import ConvGridConfig, ConvTokenizerParts, mean_psnr
from .vq_tokenizer import QUANTIZER_BOOKKEEPING, VQConfig, VQTokenizer, vq_logs

# State that is bookkeeping, not weights: left out of fingerprint() and of MAGE's files.
BOOKKEEPING = ("train_steps",) + QUANTIZER_BOOKKEEPING
BLOCK = {"bias": False, "shortcut": "branch"}  # MaskGIT's residual blocks


@dataclass
class MaskGITVQGANConfig(ConvGridConfig, VQConfig):
    """Architecture, quantizer and losses of a MaskGIT VQGAN (defaults: vqgan_config.py, ImageNet 256).

    Architecture: base_channels ("filters") x channel_mult per level (f = 2 ** (len(channel_mult) - 1)),
    num_res_blocks per level and in each middle, GroupNorm with norm_groups groups; the encoder ends
    in code_dim channels ("embedding_dim"). Quantizer: VQConfig's fields plus codebook_update
    ("gradient" as MaskGIT, or "ema"). Losses (maskgit_vqgan_loss.py): codebook_weight x quantizer
    loss (commitment beta), entropy_weight x entropy loss at entropy_temperature, perceptual_weight x
    LPIPS (VGG16 weights at perceptual_path; 0 = off), and from disc_start training steps on,
    disc_factor x (g_weight x non-saturating generator loss + discriminator loss + r1_cost x R1).
    """

    codebook_size: int = 1024
    code_dim: int = 256
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    norm_groups: int = 32
    codebook_update: str = "gradient"
    codebook_weight: float = 1.0
    entropy_weight: float = 0.1
    entropy_temperature: float = 0.01
    perceptual_weight: float = 0.0
    perceptual_path: str = ""
    g_weight: float = 0.1
    r1_cost: float = 10.0
    disc_start: int = 0
    disc_factor: float = 1.0
    disc_channels: int = 64
    disc_layers: int = 3

    def validate(self, prefix: str = "model") -> None:
        self.validate_grid(prefix)
        self.check_minimum(prefix, 1, ("base_channels", "num_res_blocks", "norm_groups", "disc_channels",
                                       "disc_layers"))
        self.check_minimum(prefix, 0, ("codebook_weight", "entropy_weight", "perceptual_weight", "g_weight",
                                       "r1_cost", "disc_factor", "disc_start"))
        if self.entropy_temperature <= 0:
            raise ConfigError(f"{prefix}.entropy_temperature must be > 0, got {self.entropy_temperature}")
        super().validate(prefix)
        self.validate_perceptual(prefix)


class MaskGITEncoder(nn.Module):
    """images (N, in_channels, H, W) in [0, 1] -> features (N, code_dim, H / f, W / f)."""

    def __init__(self, in_channels: int, base_channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 code_dim: int, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        channels = base_channels
        for i, mult in enumerate(channel_mult):
            level = Level(channels, base_channels * mult, num_res_blocks, False, 0.0, groups, **BLOCK)
            channels = base_channels * mult
            if i != len(channel_mult) - 1:
                level.downsample = Downsample(channels, conv=False)
            self.down.append(level)
        self.mid = Mid(channels, 0.0, groups, attn=False, num_blocks=num_res_blocks, **BLOCK)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, code_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class MaskGITDecoder(nn.Module):
    """codes' vectors (N, code_dim, h, w) -> images (N, out_channels, h * f, w * f) in about [0, 1].
    `up[i]` is level i (stored in encoder order, run from the last level down to 0)."""

    def __init__(self, out_channels: int, base_channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 code_dim: int, groups: int = 32):
        super().__init__()
        channels = base_channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(code_dim, channels, 3, padding=1)
        self.mid = Mid(channels, 0.0, groups, attn=False, num_blocks=num_res_blocks, **BLOCK)
        levels = []
        for i in reversed(range(len(channel_mult))):
            level = Level(channels, base_channels * channel_mult[i], num_res_blocks, False, 0.0, groups, **BLOCK)
            channels = base_channels * channel_mult[i]
            if i != 0:
                level.upsample = Upsample(channels)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


@dataclass
class MaskGITVQGANOutput:
    """What forward returns (mimkit.methods.Output's fields, plus): recon (N, C, H, W) in about
    [0, 1] (not clamped); codes (N, h, w) int64."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
    recon: torch.Tensor | None = None
    codes: torch.Tensor | None = None


class MaskGITVQGAN(ConvTokenizerParts, VQTokenizer):
    """MaskGIT's VQ autoencoder + PatchGAN discriminator; `forward(images)` is the training objective."""

    method_name, config_class = "maskgit_vqgan", MaskGITVQGANConfig
    reconstructs_pixels = True
    code_path = ("encoder.", "quantize.embedding.weight", "decoder.")

    def __init__(self, config: MaskGITVQGANConfig):
        super().__init__(config)
        c = config
        arch = dict(base_channels=c.base_channels, channel_mult=tuple(c.channel_mult), num_res_blocks=c.num_res_blocks,
                    code_dim=c.code_dim, groups=c.norm_groups)
        self.encoder = MaskGITEncoder(c.in_chans, **arch)  # MAGE's module order: encoder, decoder, quantize
        self.decoder = MaskGITDecoder(c.in_chans, **arch)
        self.quantize = self.build_quantizer()
        self.loss = MaskGITVQGANLoss(c.in_chans, c.disc_channels, c.disc_layers, c.g_weight, c.r1_cost, c.disc_factor,
                                     c.disc_start, c.perceptual_weight, c.codebook_weight, c.entropy_weight,
                                     c.entropy_temperature)
        self.register_buffer("train_steps", torch.tensor(0, dtype=torch.long))


    # ------------------------------------------------------------------ stages
    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] (MaskGIT's input range, no shift) -> (N, h, w, code_dim)."""
        self.check_images(images)
        return self.encoder(images).permute(0, 2, 3, 1)

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] (VQTokenizer's convention) -> (N, h, w, code_dim)."""
        return self.encoder((x + 1) / 2).permute(0, 2, 3, 1)

    def decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """quantised vectors (N, h, w, code_dim) -> images (N, C, H, W) in about [0, 1]."""
        return self.decoder(z.permute(0, 3, 1, 2))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, h, w) int64 -> images (N, C, H, W) in [0, 1] (clamped, as MAGE's sampler)."""
        return self.decode_codes(codes).clamp(0, 1)

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> MaskGITVQGANOutput:
        """images (N, C, H, W) in [0, 1] (labels ignored) -> MaskGITVQGANOutput with the total loss and
        logs: loss, l2, entropy, commitment, perplexity, usage, psnr, g_loss, d_loss, r1, ..."""
        feats = self.encode_features(images)
        q = self.quantize(feats)
        flat = self.quantize.to_code_space(feats.float()).reshape(-1, self.config.code_dim)
        codebook = self.quantize.codebook().float()
        affinity = -(flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t())
        recon = self.decode_vectors(q.quantized)
        step = int(self.train_steps)
        if self.training:
            self.train_steps += 1
        loss, logs = self.loss(images, recon, q.loss, step, affinity, perceptual=self.perceptual_network(images.device))
        psnr = mean_psnr(recon, images)
        return MaskGITVQGANOutput(loss=loss, logs=vq_logs(q, logs, loss=loss, psnr=psnr), recon=recon, codes=q.codes)

    def fingerprint_tag(self) -> str:
        return f"f{self.config.downsample_factor}:maskgit"


# ------------------------------------------------------------------------------ presets
def imagenet_recipe() -> dict:
    """maskgit/configs/vqgan_config.py: 256 px, filters 128 x [1, 1, 2, 2, 4], 2 residual blocks,
    1024 x 256-d codes (f = 16, 16x16 tokens), commitment 0.25, entropy 0.1 at T 0.01, non-saturating
    GAN 0.1 + R1 10, Adam (0.0, 0.99) lr 1e-4, batch 256, 1M steps (base_config: 2000 warmup steps).
    The perceptual term (0.1) needs a local VGG16/LPIPS file: add model.perceptual_weight=0.1
    model.perceptual_path=FILE."""
    return {
        "method": "maskgit_vqgan",
        "model": {"img_size": 256, "in_chans": 3, "base_channels": 128, "channel_mult": [1, 1, 2, 2, 4],
                  "num_res_blocks": 2, "codebook_size": 1024, "code_dim": 256, "beta": 0.25, "entropy_weight": 0.1,
                  "entropy_temperature": 0.01, "g_weight": 0.1, "r1_cost": 10.0},
        "data": {"name": "imagenet/train", "image_size": 256, "num_workers": 8},
        "optim": {"lr": 1e-4, "weight_decay": 0.0, "betas": [0.0, 0.99], "warmup_steps": 2000},
        "train": {"steps": 1_000_000, "batch_size": 256, "ckpt_every": 5000, "picture_every": 5000},
    }


PRESETS = {"maskgit_vqgan_imagenet_256": imagenet_recipe()}

DESCRIPTIONS = {
    "maskgit_vqgan_imagenet_256": (
        "the MaskGIT / MAGE tokenizer architecture (no attention, 1024 x 256-d codes) with vqgan_config.py's "
        "losses: L2, entropy 0.1, non-saturating GAN 0.1 + R1 10 (PatchGAN), Adam (0, 0.99) lr 1e-4, batch 256; "
        "LPIPS needs a local file"),
}
