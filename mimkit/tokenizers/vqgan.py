"""VQGAN (Esser et al., "Taming Transformers", CVPR 2021): the image tokenizer of MaskGIT and MAGE.

A convolutional encoder maps images in [0, 1] (shifted to [-1, 1]) to a (h, w) grid of vectors,
`quant_conv` projects them to the code space, `quantize` (mimkit.nn.VectorQuantizer) replaces each
by its nearest code, and `post_quant_conv` + the decoder map the codes back to pixels. Trained
with L1 reconstruction, an optional LPIPS-style perceptual term, the commitment/codebook loss and a
PatchGAN hinge loss with taming's adaptive weight, all in ONE scalar so the single-optimizer
Trainer trains generator and discriminator together (see vqgan_loss.py for why the gradients are
exactly those of two separate updates).

    model = VQGAN(VQGANConfig(img_size=32, in_chans=1, channel_mult=(1, 2, 2), codebook_size=512))
    codes = model.encode(images)           # (N, C, H, W) in [0, 1] -> (N, h, w) int64
    images = model.decode(codes)           # -> (N, C, H, W) in [0, 1]
    out = model(images)                    # training: Output(loss, logs) with psnr, usage, ...

Module and attribute names are taming-transformers' (encoder, decoder, quant_conv, quantize.embedding,
post_quant_conv, loss.discriminator), so `mimkit.hub.taming` converts its checkpoints by checking
keys and shapes only.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from .conv_blocks import Decoder, Encoder
from .conv_shared import ConvGridConfig, ConvTokenizerParts, mean_psnr
from .vq_tokenizer import QUANTIZER_BOOKKEEPING, VQConfig, VQTokenizer, vq_logs
from .vqgan_loss import VQGANLoss

# State that is bookkeeping, not weights: left out of fingerprint() (codes do not depend on it).
BOOKKEEPING = ("train_steps",) + QUANTIZER_BOOKKEEPING


@dataclass
class VQGANConfig(ConvGridConfig, VQConfig):
    """Architecture, quantizer and losses of a VQGAN (defaults: the MaskGIT / MAGE ImageNet tokenizer).

    Architecture: base_channels x channel_mult per level (f = 2 ** (len(channel_mult) - 1)),
    num_res_blocks per encoder level (+1 in the decoder), attention at the feature-map sides in
    attn_resolutions, z_channels at the bottleneck, GroupNorm with norm_groups groups.
    Input and quantizer (VQConfig's fields: img_size, in_chans, codebook_size codes of code_dim,
    beta, ema_decay, kmeans_init, kmeans_iters, restart_after, usage_window), plus codebook_update
    "gradient" (taming) or "ema" (decay ema_decay) and l2_codes = cosine lookup.
    Losses: codebook_weight x (commitment beta + codebook term), perceptual_weight x LPIPS with the
    VGG16 weights at perceptual_path (0 = off), disc_weight x adaptive weight x hinge GAN once the
    model has done disc_start training steps (disc_factor scales both GAN terms).
    """

    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    dropout: float = 0.0
    norm_groups: int = 32
    codebook_update: str = "gradient"
    l2_codes: bool = False
    codebook_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual_path: str = ""
    disc_start: int = 0
    disc_weight: float = 0.8
    disc_factor: float = 1.0
    disc_channels: int = 64
    disc_layers: int = 3

    def validate(self, prefix: str = "model") -> None:
        self.validate_grid(prefix)
        self.check_minimum(prefix, 1, ("base_channels", "num_res_blocks", "z_channels", "norm_groups", "disc_channels",
                                       "disc_layers"))
        self.check_minimum(prefix, 0, ("codebook_weight", "perceptual_weight", "disc_weight", "disc_factor", "dropout",
                                       "disc_start"))
        super().validate(prefix)
        self.validate_perceptual(prefix)


@dataclass
class VQGANOutput:
    """What forward returns (the fields of mimkit.methods.Output, which the tokenizer floor does not
    import, plus): recon (N, C, H, W) reconstruction in [-1, 1] (not clamped); codes (N, h, w) int64."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
    recon: torch.Tensor | None = None
    codes: torch.Tensor | None = None


class VQGAN(ConvTokenizerParts, VQTokenizer):
    """VQ autoencoder + PatchGAN discriminator; `forward(images)` is the whole training objective."""

    method_name, config_class = "vqgan", VQGANConfig
    reconstructs_pixels = True
    # every tensor that decides encode/decode (not the discriminator or the training counters)
    code_path = ("encoder.", "quant_conv.", "quantize.embedding.weight", "post_quant_conv.", "decoder.")

    def __init__(self, config: VQGANConfig):
        super().__init__(config)
        c = config
        arch = dict(base_channels=c.base_channels, channel_mult=tuple(c.channel_mult), num_res_blocks=c.num_res_blocks,
                    attn_resolutions=tuple(c.attn_resolutions), resolution=c.img_size, z_channels=c.z_channels,
                    dropout=c.dropout, groups=c.norm_groups)
        self.encoder = Encoder(c.in_chans, **arch)
        self.decoder = Decoder(c.in_chans, **arch)
        self.quant_conv = nn.Conv2d(c.z_channels, c.code_dim, 1)
        self.quantize = self.build_quantizer()
        self.post_quant_conv = nn.Conv2d(c.code_dim, c.z_channels, 1)
        self.loss = VQGANLoss(c.in_chans, c.disc_channels, c.disc_layers, c.disc_weight, c.disc_factor, c.disc_start,
                              c.perceptual_weight, c.codebook_weight)
        # training forwards done: the discriminator start survives a resume with the weights
        self.register_buffer("train_steps", torch.tensor(0, dtype=torch.long))


    # ------------------------------------------------------------------ stages
    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] -> pre-quantisation vectors (N, h, w, code_dim)."""
        return self.quant_conv(self.encoder(x)).permute(0, 2, 3, 1)

    def decode_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """quantised vectors (N, h, w, code_dim) -> images (N, C, H, W) in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z.permute(0, 3, 1, 2)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, h, w) int64 -> images (N, C, H, W) in [0, 1]."""
        return ((self.decode_codes(codes) + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> VQGANOutput:
        """images (N, C, H, W) in [0, 1] (labels ignored) -> VQGANOutput with the total loss and logs:
        loss, l1, rec_loss, commitment, perplexity, usage, restarted, psnr, g_loss, d_loss, disc_weight, ..."""
        x = images * 2 - 1
        q = self.quantize(self.encode_features(images))
        recon = self.decode_vectors(q.quantized)
        step = int(self.train_steps)
        if self.training:
            self.train_steps += 1
        loss, logs = self.loss(x, recon, q.loss, step, self.decoder.conv_out.weight,
                               perceptual=self.perceptual_network(images.device))
        psnr = mean_psnr((recon.detach() + 1) / 2, images)
        return VQGANOutput(loss=loss, logs=vq_logs(q, logs, loss=loss, psnr=psnr), recon=recon, codes=q.codes)

    # ------------------------------------------------------------------ downstream
    def fingerprint_tag(self) -> str:
        return f"f{self.config.downsample_factor}:l2={self.config.l2_codes}"


# ------------------------------------------------------------------------------ presets
def imagenet_recipe() -> dict:
    """The MaskGIT / MAGE tokenizer: 256 px, f = 16 (16x16 tokens), 1024 x 256-d codes, base 128,
    multipliers [1, 1, 2, 2, 4], 2 residual blocks, attention at 16 px; taming's training recipe
    (Adam betas (0.5, 0.9), lr 4.5e-6 x batch 96, discriminator from step 250001, weight 0.8).
    The perceptual term needs a local VGG16/LPIPS file: add model.perceptual_weight=1.0
    model.perceptual_path=FILE for the full recipe."""
    return {
        "method": "vqgan",
        "model": {"img_size": 256, "in_chans": 3, "base_channels": 128, "channel_mult": [1, 1, 2, 2, 4],
                  "num_res_blocks": 2, "attn_resolutions": [16], "z_channels": 256, "codebook_size": 1024,
                  "code_dim": 256, "beta": 0.25, "disc_start": 250001, "disc_weight": 0.8},
        "data": {"name": "imagenet/train", "image_size": 256, "crop_scale": [0.8, 1.0], "num_workers": 8},
        "optim": {"lr": 4.5e-6 * 96, "weight_decay": 0.0, "betas": [0.5, 0.9], "warmup_steps": 0},
        "train": {"steps": 500_000, "batch_size": 12, "accum_steps": 8, "ckpt_every": 5000, "picture_every": 5000},
    }


def fmnist_recipe(steps: int = 2000, **model) -> dict:
    """Fashion-MNIST resized to 32 px grey, f = 4 -> 8x8 tokens, 512 codes: a CPU-sized tokenizer
    (~15 min on 2 cores: ~0.7 s of CPU per step of 64 images, ~0.8 s once the discriminator is on)
    with an EMA codebook, k-means init and dead-code restart; the GAN joins for the last 40%."""
    base = {"img_size": 32, "in_chans": 1, "base_channels": 16, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
            "attn_resolutions": [], "z_channels": 64, "norm_groups": 8, "codebook_size": 512, "code_dim": 32,
            "beta": 0.25, "codebook_update": "ema", "ema_decay": 0.95, "kmeans_init": True, "restart_after": 50,
            "usage_window": 50, "disc_start": int(steps * 0.6), "disc_weight": 0.1, "disc_channels": 32,
            "disc_layers": 2}
    base.update(model)
    return {
        "method": "vqgan",
        "model": base,
        "data": {"name": "fashion-mnist", "image_size": 32, "augment": False},
        "optim": {"lr": 2e-3, "min_lr": 1e-4, "weight_decay": 0.0, "betas": [0.5, 0.9], "warmup_steps": 100},
        "train": {"steps": steps, "batch_size": 64, "ckpt_every": max(steps // 4, 1),
                  "picture_every": max(steps // 4, 1), "log_every": 25},
    }


PRESETS = {
    "vqgan_imagenet_f16_1024": imagenet_recipe(),
    "vqgan_fmnist": fmnist_recipe(),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "vqgan_imagenet_f16_1024": (
        "the MaskGIT / MAGE tokenizer (1024 x 256-d codes) with taming's recipe: Adam (0.5, 0.9), batch 96, GAN "
        "from step 250001; LPIPS needs a local file (model.perceptual_path)"),
    "vqgan_fmnist": (
        "CPU VQGAN on Fashion-MNIST (32 px grey; EMA codebook, k-means init, dead-code restart, GAN in the last "
        "40%); measured 27.1 dB PSNR, 100% code usage; the Fashion-MNIST token models' tokenizer (runs/vq_fmnist)"),
}
