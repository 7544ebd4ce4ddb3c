"""RevColV2: Disentangled Representations in Masked Image Modeling (Han et al., 2023).

An isotropic reversible column network (mimkit.nn.reversible) used as a masked autoencoder:
  - bottom-up columns (the encoder) see the [cls; visible patches] only (MAE's random masking);
    their input enters level 0 and each column updates levels 0 -> n-1;
  - every level of the last encoder column is scattered back to the full length, with a learned
    per-level mask token at the hidden positions, plus the sin-cos positions; these are the
    initial states of the top-down columns (the decoder), whose input - the scattered top level -
    enters level n-1 and each column updates levels n-1 -> 0;
  - the pixels of the hidden patches are regressed from LEVEL 0 of the last column (MSE over hidden
    patches, optionally per-patch normalised targets, exactly MAE's objective).
Downstream (`features`) the whole encoder-decoder runs without masking and the top level of the
last column is read (features_from="decoder", the paper's choice); features_from="encoder" reads the
top level of the last encoder column instead.

The authors never released V2 code: how F_l combines its inputs (sum, then ViT blocks), the
per-level mask tokens and the decoder's input are mimkit's choices, documented in reversible.py.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import Linear, pool_tokens, restore_order
from ..nn.init import init_vit_weights_
from ..nn.reversible import ALPHA_MIN, ColumnStack
from .base import Method
from .pixel_reconstruction import MAEOutput, PixelReconstruction
from .pixel_statistics import check_pixel_statistics, register_pixel_statistics
from .vit_config import ViTConfig, check_mask_ratio, check_patch_grid, check_width_heads

FEATURE_SOURCES = ("decoder", "encoder")


@dataclass
class RevColV2Config(ViTConfig):
    """Architecture and objective. All levels and columns share one width (isotropic network;
    the patch grid, width and pixel normalisation: ViTConfig).

    n_levels: feature levels per column; level_depth: ViT blocks per level and column;
    encoder_columns / decoder_columns: bottom-up / top-down columns; alpha_init: initial per-channel
    scale of the reversible shortcut (RevCol's 0.5); reversible: recompute activations in backward
    (same values and gradients as the plain path, memory flat in the number of columns);
    anchor_every: k > 0 keeps the exact states after every k-th column of each stack, so the float32
    error of inverting through the columns stays that of k columns (0 = keep none).
    Pixel normalisation (pixel_mean / pixel_std) and the objective are MAE's.
    """

    n_levels: int = 4
    level_depth: int = 1
    encoder_columns: int = 4
    decoder_columns: int = 4
    alpha_init: float = 0.5
    reversible: bool = True
    anchor_every: int = 0
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    dropout: float = 0.0
    features_from: str = "decoder"

    def validate(self, prefix: str = "model") -> None:
        check_mask_ratio(self, prefix)
        check_patch_grid(self, prefix)
        check_width_heads(self, prefix)
        if self.anchor_every < 0:
            raise ConfigError(f"{prefix}.anchor_every must be >= 0 (0 = no anchors), got {self.anchor_every}")
        for name in ("n_levels", "level_depth", "encoder_columns", "decoder_columns"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}.{name} must be >= 1, got {getattr(self, name)}")
        if abs(self.alpha_init) < ALPHA_MIN:
            raise ConfigError(f"{prefix}.alpha_init must satisfy |alpha_init| >= {ALPHA_MIN} (the reversible "
                              f"update divides by it), got {self.alpha_init}")
        for name in ("drop_path", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{prefix}.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.features_from not in FEATURE_SOURCES:
            raise ConfigError(f"{prefix}.features_from must be one of {', '.join(FEATURE_SOURCES)}, "
                              f"got {self.features_from!r}")
        check_pixel_statistics(self, prefix)


class RevColV2(PixelReconstruction, Method):
    """Reversible-column masked autoencoder: bottom-up encoder columns, top-down decoder columns
    (MAE's masked input, pixel helpers, objective and pictures: PixelReconstruction)."""

    method_name, config_class = "revcolv2", RevColV2Config
    reconstructs_pixels = True

    def __init__(self, config: RevColV2Config):
        super().__init__()
        config.validate()
        self.config = c = config
        self.build_encoder_input()  # patch_embed, cls_token, pos_embed
        columns = dict(n_levels=c.n_levels, dim=c.embed_dim, num_heads=c.num_heads, depth=c.level_depth,
                       mlp_ratio=c.mlp_ratio, drop_path=c.drop_path, dropout=c.dropout, alpha_init=c.alpha_init,
                       norm_eps=c.norm_eps, attn_impl=c.attn_impl, reversible=c.reversible,
                       anchor_every=c.anchor_every)
        self.encoder = ColumnStack(c.encoder_columns, top_down=False, **columns)
        self.mask_tokens = nn.Parameter(torch.zeros(c.n_levels, c.embed_dim))  # one per level
        self.decoder = ColumnStack(c.decoder_columns, top_down=True, **columns)
        self.decoder_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.decoder_pred = Linear(c.embed_dim, c.patch_size**2 * c.in_chans)
        # the top level is never supervised in pretraining, so its norm has no (untrained) affine
        self.feature_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps, elementwise_affine=False)
        register_pixel_statistics(self, c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAE's init (fixed sin-cos positions, xavier-uniform linears, N(0, 0.02) tokens); the
        reversible scales keep alpha_init."""
        self.reset_encoder_input()
        nn.init.normal_(self.mask_tokens, std=0.02)
        init_vit_weights_(self)

    # ------------------------------------------------------------- stages
    def forward_encoder(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None):
        """Normalised images (N, C, H, W) -> (levels: n_levels x (N, 1+K, D), mask (N, L), ids_restore (N, L));
        only the visible patches are embedded; noise (N, L) or `generator` fixes the mask."""
        h, masked = self.embed_visible(x, mask_ratio, noise, generator)
        return self.encoder(h), masked.mask, masked.ids_restore

    def scatter_back(self, h: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """[cls; kept] (N, 1+K, D) -> [cls; patches in image order] (N, 1+L, D) with `mask_token` (D,)
        at the hidden positions, plus the positions."""
        return restore_order(h, mask_token.to(h.dtype), ids_restore) + self.pos_embed

    def forward_decoder(self, levels: list[torch.Tensor], ids_restore: torch.Tensor) -> list[torch.Tensor]:
        """Encoder levels n_levels x (N, 1+K, D) -> the last top-down column's levels n_levels x (N, 1+L, D)."""
        full = [self.scatter_back(h, ids_restore, self.mask_tokens[l]) for l, h in enumerate(levels)]
        return self.decoder(full[-1], full)

    def predict_pixels(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Decoder levels -> predicted patches (N, L, p*p*C), read from level 0."""
        return self.decoder_pred(self.decoder_norm(levels[0]))[:, 1:, :]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                noise: torch.Tensor | None = None, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> MAEOutput:
        """images (N, C, H, W) in [0, 1]; labels are ignored (self-supervised); noise (N, L) or
        `generator` fixes the mask. Returns MAEOutput: loss, pred (N, L, p*p*C), mask (N, L) with 1 = hidden."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x = self.normalize(images)
        levels, mask, ids_restore = self.forward_encoder(x, ratio, noise, generator)
        pred = self.predict_pixels(self.forward_decoder(levels, ids_restore))
        loss = self.forward_loss(x, pred, mask)
        return MAEOutput(loss=loss, logs={"loss": loss.detach()}, pred=pred, mask=mask)

    # ---------------------------------------------------- downstream use
    def all_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, C, H, W) in [0, 1] -> the unmasked network's levels n_levels x (N, 1+L, D),
        from the last decoder column (features_from="decoder") or the last encoder column."""
        in_order = self.in_order_noise(images.shape[0], self.patch_embed.num_patches, images.device)
        levels, _, ids_restore = self.forward_encoder(self.normalize(images), 0.0, noise=in_order)
        if self.config.features_from == "decoder":
            levels = self.forward_decoder(levels, ids_restore)
        return levels

    def features(self, images: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, D): the normed top level of the last column without
        masking, its cls position (pool="cls") or the mean of its patch positions (pool="mean")."""
        return pool_tokens(self.feature_norm(self.all_levels(images)[-1]), pool)


# ------------------------------------------------------------------ presets
def imagenet_recipe(embed_dim: int, num_heads: int, columns: int):
    """An ImageNet-1k pretraining recipe. V2's code and full recipe were never released, so apart from
    224 px, 75% masking and pixel targets all of it is a guess: ViT-B's width, heads and patch size
    (768, 12, 16; the paper's RevColV2-B sizes are not checked here), 4 levels and
    `columns` encoder + `columns` decoder columns of 1 block per level, anchor_every=2 (float32
    inversion through 4 columns: up to 7e-5 relative gradient error at init, 3e-6 with it, on a small
    stack in tests/benchmark style; unmeasured at ViT-B size), and the optimiser
    numbers (MAE's: blr 1.5e-4, batch 4096, 800 epochs, 40 warmup, wd 0.05, betas 0.9/0.95) are guesses."""
    steps_per_epoch = 1_281_167 // 4096
    return {
        "method": "revcolv2",
        "model": {"img_size": 224, "patch_size": 16, "in_chans": 3, "embed_dim": embed_dim, "num_heads": num_heads,
                  "n_levels": 4, "level_depth": 1, "encoder_columns": columns, "decoder_columns": columns,
                  "mask_ratio": 0.75, "norm_pix_loss": True, "drop_path": 0.0, "reversible": True,
                  "anchor_every": 2},
        "data": {"name": "imagenet/train", "image_size": 224, "crop_scale": [0.2, 1.0], "num_workers": 8},
        "optim": {"blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95], "warmup_steps": 40 * steps_per_epoch},
        "train": {"steps": 800 * steps_per_epoch, "batch_size": 64, "accum_steps": 64, "ckpt_every": 5000},
    }


def fmnist_recipe(steps: int, batch_size: int = 32, blr: float = 8e-3, warmup_steps: int = 100, **model):
    """A grey 28 px RevColV2 for Fashion-MNIST on one CPU thread (patch 4 -> 49 patches): 4 levels of
    128-d, 2 encoder + 2 decoder columns of 1 block per level (16 blocks). lr = blr * 32 / 256 = 1e-3.
    The plain path: at 49 patches memory is no concern and it skips the reversible backward's
    recomputation (see benchmarks/revcol_memory.py); reversible=true trains the same function."""
    base = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 128, "num_heads": 4, "n_levels": 4,
            "level_depth": 1, "encoder_columns": 2, "decoder_columns": 2, "mask_ratio": 0.75,
            "norm_pix_loss": True, "reversible": False}
    base.update(model)
    return {
        "method": "revcolv2",
        "model": base,
        "data": {"name": "fashion-mnist", "image_size": 28, "crop_scale": [0.2, 1.0]},
        "optim": {"blr": blr, "weight_decay": 0.05, "betas": [0.9, 0.95], "warmup_steps": warmup_steps},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "picture_every": steps // 4},
    }


PRESETS = {
    "revcolv2_base": imagenet_recipe(768, 12, 4),
    "revcolv2_fmnist": fmnist_recipe(800),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "revcolv2_base": (
        "RevColV2 on ImageNet-1k: 224 px, 75% masked, pixel targets; the rest is a guess (V2's code and recipe are "
        "unreleased): ViT-B sizes, 4 + 4 reversible columns, MAE's optimiser recipe"),
    "revcolv2_fmnist": (
        "CPU RevColV2 on Fashion-MNIST (plain, non-reversible path), 800 steps of 32; measured (mean pool) linear "
        "probe +1.6, k-NN +11.7 over random init"),
}
