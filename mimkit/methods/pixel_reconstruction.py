"""Pixel targets and MAE-style masked pixel reconstruction, shared by the methods that regress pixels.

Shapes: images (N, C, H, W), in [0, 1] ("pixel space") or normalised (x - mean) / std ("model
space"); a patch sequence (N, L, p*p*C) holds the L = h * w patches in row-major order, each
flattened in (row, col, channel) order (MAE's `patchify`); a mask (N, L) is 1 (or True) where a
patch is hidden.

`PixelPatches` (MAE, RevColV2, BEiT v2 with target="pixels"): moving between images and patch
sequences, normalisation and the per-patch regression target. It reads from the class it is mixed
into: config.patch_size, config.in_chans, config.norm_pix_loss and config.grid_size
(mimkit.methods.vit_config.ViTConfig), and the buffers pixel_mean / pixel_std of shape
(1, C or 1, 1, 1) (mimkit.methods.pixel_statistics.register_pixel_statistics).

`PixelReconstruction` (MAE, RevColV2) adds MAE's masked encoder input, objective and pictures:
`build_encoder_input` (called from the class's __init__) makes patch_embed (mimkit.nn.PatchEmbed),
cls_token (1, 1, D) and the fixed sin-cos pos_embed (1, 1 + L, D), the cls position first (MAE's
key names; D = config.embed_dim), and `reconstruct` calls the class's
forward(images, noise=, mask_ratio=, generator=) -> `MAEOutput`.

The mixins hold no parameters or buffers of their own: a model's state-dict keys are its
attributes', named by the model or by build_encoder_input.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import (MaskedSequence, PatchEmbed, gather_tokens, patchify, random_masking, sincos_2d, uniform_noise,
                  unpatchify)
from ..nn.init import xavier_patch_embed_
from .output import Output


@dataclass
class MAEOutput(Output):
    """The output of a masked pixel reconstruction (MAE, RevColV2): pred (N, L, p*p*C) predicted
    (normalised) patches; mask (N, L) float, 1 = hidden."""

    pred: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class PixelPatches:
    """Images <-> patch sequences, (de)normalisation and the pixel regression target (see the module doc)."""

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the patch grid."""
        return self.config.grid_size

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (N, C, H, W) -> model input (x - mean) / std, (N, C, H, W)."""
        return (images - self.pixel_mean) / self.pixel_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images (N, C, H, W) -> [0, 1] pixel space (N, C, H, W), not clamped."""
        return x * self.pixel_std + self.pixel_mean

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C)."""
        return patchify(x, self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        return unpatchify(patches, self.config.patch_size, self.grid_size, self.config.in_chans)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, H, W) -> regression target (N, L, p*p*C): the patches, each
        standardised by its own mean and variance when config.norm_pix_loss."""
        target = self.patchify(x)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target


class PixelReconstruction(PixelPatches):
    """MAE's masked pixel autoencoding around a class's own encoder and decoder: the visible
    patches' embedding, the loss on hidden patches and the reconstruction pictures."""

    # ------------------------------------------------------------------ the masked input
    def build_encoder_input(self) -> None:
        """patch_embed, cls_token (1, 1, D) and the fixed (no grad) position embedding pos_embed
        (1, 1 + L, D), from config img_size / patch_size / in_chans / embed_dim."""
        c = self.config
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, c.embed_dim),
                                      requires_grad=False)

    def reset_encoder_input(self) -> None:
        """MAE's init of the encoder input: 2-D sin-cos positions (cls position zero), xavier-uniform
        patch projection, cls token ~ N(0, 0.02) (these two from the global RNG, in this order)."""
        self.pos_embed.data.copy_(sincos_2d(self.config.embed_dim, self.grid_size, cls_token=True)[None])
        xavier_patch_embed_(self.patch_embed)
        nn.init.normal_(self.cls_token, std=0.02)

    def draw_noise(self, n: int, length: int, mask_ratio: float, device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, L) noise whose smallest int(L * (1 - mask_ratio)) entries per row are the kept
        patches: uniform (MAE's random masking), from `generator` or the global RNG."""
        return uniform_noise((n, length), device, generator)

    @staticmethod
    def in_order_noise(n: int, length: int, device) -> torch.Tensor:
        """(N, L) increasing noise: with mask ratio 0 every patch is kept, in image (row-major)
        order, and the global RNG is left untouched."""
        return torch.arange(length, device=device, dtype=torch.float32).expand(n, -1)

    def embed_visible(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, MaskedSequence]:
        """Normalised images (N, C, H, W) -> ([cls; visible patches] (N, 1 + K, D) with their
        positions, the masking (mask (N, L), ids_keep (N, K), ids_restore (N, L))). noise (N, L)
        fixes the mask, else it is drawn (`draw_noise`, with `generator`)."""
        # Mask the raw patches and embed only the kept ones: the same tokens as embedding all
        # and then masking (the projection is per patch), for a quarter of the work and with no
        # gather in the backward pass.
        n = x.shape[0]
        patches = self.patch_embed.patches(x)
        if noise is None:
            noise = self.draw_noise(n, patches.shape[1], mask_ratio, x.device, generator)
        masked = random_masking(patches, mask_ratio, noise=noise)
        pos = gather_tokens(self.pos_embed[:, 1:, :].expand(n, -1, -1), masked.ids_keep)
        tokens = self.patch_embed.embed(masked.kept) + pos  # (N, K, D)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        return torch.cat([cls, tokens], dim=1), masked

    # ------------------------------------------------------------------ the objective
    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, H, W), pred (N, L, p*p*C), mask (N, L) -> the mean squared
        error over the hidden patches only (a scalar)."""
        per_patch = (pred - self.target(x)).pow(2).mean(dim=-1)  # (N, L)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                    mask_ratio: float | None = None, generator: torch.Generator | None = None) -> dict:
        """For pictures: images (N, C, H, W) in [0, 1] -> dict of [0, 1] images (N, C, H, W):
        masked (hidden patches grey), reconstruction (pred, visible patches pasted back), original,
        and `mask` (N, L). norm_pix predictions are un-normalised with each patch's true mean/var."""
        out = self(images, noise=noise, mask_ratio=mask_ratio, generator=generator)
        x = self.normalize(images)
        pred = out.pred
        if self.config.norm_pix_loss:
            target = self.patchify(x)
            pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
        hidden = out.mask.unsqueeze(-1)
        pasted = self.patchify(x) * (1 - hidden) + pred * hidden
        recon = self.denormalize(self.unpatchify(pasted)).clamp(0, 1)
        mask_img = self.unpatchify(hidden.expand(-1, -1, pred.shape[-1]))
        masked = images * (1 - mask_img) + 0.5 * mask_img
        return {"masked": masked, "reconstruction": recon, "original": images, "mask": out.mask}
