"""MAE: Masked Autoencoders Are Scalable Vision Learners (He et al., CVPR 2022).

An encoder ViT sees only the visible ~25% of patches (+ cls); a light decoder sees the encoded
visible tokens plus a shared mask token at every hidden position and regresses the pixels of the
hidden patches (optionally normalised per patch). Attribute names give the official state-dict
keys (cls_token, pos_embed, patch_embed.proj, blocks.i..., decoder_embed, decoder_pred, ...), so
official checkpoints load without renaming.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import MASK_TYPES, Block, Linear, mask_noise, pool_tokens, restore_order, sincos_2d
from ..nn.init import init_vit_weights_
from .base import Method
from .pixel_reconstruction import MAEOutput, PixelReconstruction
from .pixel_statistics import check_pixel_statistics, register_pixel_statistics
from .vit_config import ViTConfig, check_mask_ratio, check_patch_grid, check_width_heads


@dataclass
class MAEConfig(ViTConfig):
    """Architecture and objective of an MAE (the encoder's patch grid, width and pixel
    normalisation: ViTConfig; ViT-L by default).

    mask_type: which patches training hides (mimkit.nn.mask_noise): "random" (the paper's
    default), "block" (BEiT-style rectangles, min area 16 patches of 196 scaled to the grid) or
    "grid" (keep one patch of every 2x2 cell)."""

    embed_dim: int = 1024
    num_heads: int = 16
    depth: int = 24
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio: float = 0.75
    mask_type: str = "random"
    norm_pix_loss: bool = False

    def validate(self, prefix: str = "model") -> None:
        check_mask_ratio(self, prefix)
        if self.mask_type not in MASK_TYPES:
            raise ConfigError(f"{prefix}.mask_type must be one of {', '.join(MASK_TYPES)}, got {self.mask_type!r}")
        check_patch_grid(self, prefix)
        check_width_heads(self, prefix, (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")))
        check_pixel_statistics(self, prefix)


class MAE(PixelReconstruction, Method):
    """Masked autoencoder with a ViT encoder and a light ViT decoder (pixel helpers, objective and
    pictures: PixelReconstruction)."""

    method_name, config_class = "mae", MAEConfig
    reconstructs_pixels = True

    def __init__(self, config: MAEConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.build_encoder_input()  # patch_embed, cls_token, pos_embed
        rates = torch.linspace(0, c.drop_path, c.depth).tolist()
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio, drop_path=r, norm_eps=c.norm_eps,
                                          attn_impl=c.attn_impl) for r in rates)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)

        self.decoder_embed = Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, c.decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio,
                                                  norm_eps=c.norm_eps, attn_impl=c.attn_impl)
                                            for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=c.norm_eps)
        self.decoder_pred = Linear(c.decoder_embed_dim, c.patch_size**2 * c.in_chans)

        register_pixel_statistics(self, c)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """MAE's init: fixed sin-cos positions, xavier-uniform linears, N(0, 0.02) tokens."""
        self.reset_encoder_input()
        decoder_pos = sincos_2d(self.config.decoder_embed_dim, self.grid_size, cls_token=True)
        self.decoder_pos_embed.data.copy_(decoder_pos[None])
        nn.init.normal_(self.mask_token, std=0.02)
        init_vit_weights_(self)

    # ------------------------------------------------------------- stages
    def forward_encoder(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None):
        """Normalised images (N, C, H, W) -> (latent (N, 1+K, D), mask (N, L), ids_restore (N, L));
        noise (N, L) fixes the mask, else it is drawn with `generator` (or the global RNG)."""
        h, masked = self.embed_visible(x, mask_ratio, noise, generator)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), masked.mask, masked.ids_restore

    def draw_noise(self, n: int, length: int, mask_ratio: float, device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform noise for mask_type="random", else `structured_noise`."""
        if self.config.mask_type == "random":
            return super().draw_noise(n, length, mask_ratio, device, generator)
        return self.structured_noise(n, length, mask_ratio, device, generator)

    def structured_noise(self, n: int, length: int, mask_ratio: float, device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, L) noise whose int(L * (1 - mask_ratio)) smallest entries follow config.mask_type
        (drawn on the CPU: `generator` is a CPU generator)."""
        keep = int(length * (1 - mask_ratio))
        min_block = max(1, round(16 * length / 196))  # BEiT's 16 of a 14x14 grid, scaled to this grid
        return mask_noise(self.config.mask_type, n, self.grid_size, keep, min_block=min_block, generator=generator,
                          device=device)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (N, 1+K, D), ids_restore (N, L) -> predicted patches (N, L, p*p*C)."""
        # [cls; kept] + mask tokens -> [cls; patches in image order] in one gather (unshuffle)
        h = restore_order(self.decoder_embed(latent), self.mask_token, ids_restore) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:, :]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                noise: torch.Tensor | None = None, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> MAEOutput:
        """images (N, C, H, W) in [0, 1]; labels are ignored (MAE is self-supervised); noise (N, L)
        or `generator` fixes the mask."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x = self.normalize(images)
        latent, mask, ids_restore = self.forward_encoder(x, ratio, noise, generator)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(x, pred, mask)
        return MAEOutput(loss=loss, logs={"loss": loss.detach()}, pred=pred, mask=mask)

    # ---------------------------------------------------- downstream use
    def encode_unmasked(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> the unmasked encoder's normed tokens (N, 1+L, D), cls
        first, patches in image (row-major) order."""
        in_order = self.in_order_noise(images.shape[0], self.patch_embed.num_patches, images.device)
        latent, _, _ = self.forward_encoder(self.normalize(images), 0.0, noise=in_order)
        return latent

    def features(self, images: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, D): the unmasked encoder's normed cls token
        (pool="cls") or the mean of its normed patch tokens (pool="mean")."""
        return pool_tokens(self.encode_unmasked(images), pool)

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, L, D): the unmasked encoder's normed patch tokens
        (no cls), e.g. as a VQ-KD teacher."""
        return self.encode_unmasked(images)[:, 1:]


# ------------------------------------------------------------------ presets
# Paper recipes (ImageNet-1k, 224 px; point data.name at an ImageNet train folder) and CPU presets.
def paper_recipe(embed_dim, depth, num_heads, patch_size):
    """The MAE paper's ImageNet recipe: 800 epochs at batch 4096 (1.28M images), 40 warmup epochs."""
    steps_per_epoch = 1_281_167 // 4096
    return {
        "method": "mae",
        "model": {"img_size": 224, "patch_size": patch_size, "in_chans": 3, "embed_dim": embed_dim,
                  "depth": depth, "num_heads": num_heads, "decoder_embed_dim": 512, "decoder_depth": 8,
                  "decoder_num_heads": 16, "norm_pix_loss": True, "mask_ratio": 0.75},
        "data": {"name": "imagenet/train", "image_size": 224, "crop_scale": [0.2, 1.0], "num_workers": 8},
        "optim": {"blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95], "warmup_steps": 40 * steps_per_epoch},
        "train": {"steps": 800 * steps_per_epoch, "batch_size": 64, "accum_steps": 64, "ckpt_every": 5000},
    }


def cpu_recipe(steps: int, batch_size: int = 256, blr: float = 1.5e-4, warmup_steps: int | None = None, **model):
    """A grey 28 px MAE for Fashion-MNIST on a laptop CPU (patch 4 -> 7x7 = 49 patches)."""
    base = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 192, "depth": 6, "num_heads": 3,
            "decoder_embed_dim": 128, "decoder_depth": 2, "decoder_num_heads": 4, "norm_pix_loss": True,
            "mask_ratio": 0.75}
    base.update(model)
    return {
        "method": "mae",
        "model": base,
        "data": {"name": "fashion-mnist", "image_size": 28, "crop_scale": [0.2, 1.0]},
        "optim": {"blr": blr, "weight_decay": 0.05, "betas": [0.9, 0.95],
                  "warmup_steps": steps // 20 if warmup_steps is None else warmup_steps},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "picture_every": steps // 4},
    }


PRESETS = {
    "mae_vit_base_patch16": paper_recipe(768, 12, 12, 16),
    "mae_vit_large_patch16": paper_recipe(1024, 24, 16, 16),
    "mae_vit_huge_patch14": paper_recipe(1280, 32, 16, 14),
    "mae_tiny_fmnist": cpu_recipe(2000, blr=1.5e-3),
    # what `make demo` trains: small enough for ~4 epochs in a few CPU minutes; batch 64 because on
    # this budget the number of updates matters more than the batch (measured: see the README)
    "mae_demo_fmnist": cpu_recipe(4000, batch_size=64, blr=4e-3, warmup_steps=200, embed_dim=128, depth=4,
                                  num_heads=4, decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4),
    "mae_micro_fmnist": cpu_recipe(300, embed_dim=96, depth=4, num_heads=3, decoder_embed_dim=64,
                                   decoder_depth=1, decoder_num_heads=4),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "mae_vit_base_patch16": (
        "MAE paper's ViT-B/16 ImageNet-1k recipe: 75% masked, norm_pix_loss, blr 1.5e-4 at batch 4096 (64 x 64 "
        "accumulation), 800 epochs, 40 warmup"),
    "mae_vit_large_patch16":
        "MAE paper's ViT-L/16: the mae_vit_base_patch16 recipe (ImageNet-1k, 75% masked, batch 4096, 800 epochs)",
    "mae_vit_huge_patch14":
        "MAE paper's ViT-H/14: the mae_vit_base_patch16 recipe (ImageNet-1k, 75% masked, batch 4096, 800 epochs)",
    "mae_tiny_fmnist":
        "CPU MAE on Fashion-MNIST (28 px grey), 2000 steps of 256 images (~8.5 epochs); the README's example run",
    "mae_demo_fmnist": (
        "what `make demo` trains (~5 min on 2 cores): 4000 steps of 64 (~4 epochs); measured linear probe +6.3, "
        "k-NN +11.2 over random init; vqkd_fmnist's teacher (runs/mae_teacher)"),
    "mae_micro_fmnist":
        "the smallest CPU MAE, 300 steps of 256 images: for tests, quick checks and DDP smoke runs",
}
