"""BEiT v2 stage 2: masked image modeling of a frozen VQ-KD tokenizer's codes (Peng et al., 2022).

A block-wise mask hides 75 of 196 patches (BEiT's own MaskingGenerator: random rectangles, then
single patches up to the exact count; the default ratio 75 / 196 scales it to other grids); hidden patch
embeddings are replaced by a learned mask token and the FULL sequence [cls; L patches] goes
through a ViT with BEiT's details: layer scale, q/v biases (k bias zero), one relative position
bias shared by all blocks, stochastic depth. A MIM head (the final LayerNorm `norm` + Linear
`lm_head` to the codebook) predicts the tokenizer's code at every hidden position.

Patch aggregation (the "cls pretraining" head): the LAST block's cls token is concatenated with
the patch tokens after block `early_layers`, passed through `head_layers` extra blocks
(`cls_pt_layers`) and the SAME norm + lm_head; the total loss is the sum of both cross-entropies.
The extra blocks push global information into the cls token and are not used by `features`.

Init as unilm's beit2/modeling_pretrain.py: N(0, 0.02) truncated at +-0.02 (one std, so the
empirical std is ~0.54 x 0.02) for cls / mask tokens, the position table, the patch-embedding conv
and every Linear of the main network (zero biases), then the fix_init_weight rescale; the
aggregation blocks are built after that init in the reference, so they keep PyTorch's default
Linear init and only get the rescale by their layer id (early_layers + i + 1).

target="pixels" is the low-level baseline of the same network: the head regresses the pixels of
each hidden patch instead (MAE's per-patch normalised target, MSE), everything else unchanged; the
tokenizer then only fixes the patch grid.

Attribute names give the unilm key names (cls_token, mask_token, patch_embed.proj, rel_pos_bias,
blocks.i.attn.{qkv.weight, q_bias, v_bias}, norm, lm_head, cls_pt_layers.i); only layer scale
differs (ls1.gamma / ls2.gamma here, gamma_1 / gamma_2 there): see mimkit.hub.beitv2_unilm.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn import Block, BlockMasking, Linear, PatchEmbed, RelativePositionBias, num_masked_patches, pool_tokens
from ..nn.init import init_vit_weights_, rescale_residual_outputs_
from .output import Output
from .pixel_reconstruction import PixelPatches
from .pixel_statistics import check_pixel_statistics, register_pixel_statistics
from .token_model import FrozenTokenizerConfig, FrozenTokenizerModel
from .vit_config import ViTConfig, check_patch_grid


@dataclass
class BEiTv2Config(FrozenTokenizerConfig, ViTConfig):
    """The ViT, the aggregation head and the block masking (tokenizer fields: FrozenTokenizerConfig;
    the patch grid, width and pixel normalisation: ViTConfig).

    layer_scale: initial per-channel residual scale (0 = no layer scale). early_layers: the block
    whose patch tokens feed the aggregation head; head_layers: its extra blocks (0 = no head).
    num_mask_patches: hidden patches per image (0 = round(mask_ratio * L); the default ratio 75 / 196
    gives the official --num_mask_patches 75 on a 14x14 grid); min/max_mask_patches:
    the area range of one masking rectangle (max 0 = no limit); mask_min_aspect: its h / w lies in
    [mask_min_aspect, 1 / mask_min_aspect]. abs_pos_embed: also a learned absolute position
    embedding (the released BEiT v2 models use the relative bias only). Images enter in [0, 1] and
    are normalised with pixel_mean / pixel_std (see pixel_statistics) for the ViT; the tokenizer
    gets the [0, 1] images. target: "codes" (the tokenizer's, cross-entropy: BEiT v2) or "pixels"
    (the normalised pixels of each hidden patch, MSE: a low-level baseline; with norm_pix_loss each
    patch's target is standardised by its own mean and std, as MAE's).
    """

    depth: int = 12
    layer_scale: float = 0.1
    drop_path: float = 0.1
    abs_pos_embed: bool = False
    early_layers: int = 9
    head_layers: int = 2
    num_mask_patches: int = 0
    mask_ratio: float = 75 / 196  # unilm's --num_mask_patches 75 of 14 x 14 (0.3827)
    min_mask_patches: int = 16
    max_mask_patches: int = 0
    mask_min_aspect: float = 0.3
    target: str = "codes"
    norm_pix_loss: bool = True

    @property
    def masked_count(self) -> int:
        """Hidden patches per image."""
        length = self.grid_size[0] * self.grid_size[1]
        return self.num_mask_patches or num_masked_patches(self.mask_ratio, length)

    def validate(self, prefix: str = "model") -> None:
        self.validate_tokenizer(prefix)
        check_patch_grid(self, prefix)
        if self.embed_dim <= 0 or self.num_heads <= 0 or self.embed_dim % self.num_heads:
            raise ConfigError(f"{prefix}.embed_dim={self.embed_dim} must be positive and divisible by "
                              f"{prefix}.num_heads={self.num_heads}")
        if not 1 <= self.early_layers <= self.depth or self.head_layers < 0:
            raise ConfigError(f"{prefix}.early_layers must be in [1, depth={self.depth}] and head_layers >= 0, "
                              f"got {self.early_layers} and {self.head_layers}")
        if not 0.0 <= self.drop_path < 1.0 or self.layer_scale < 0:
            raise ConfigError(f"{prefix}.drop_path must be in [0, 1) and layer_scale >= 0, got {self.drop_path} "
                              f"and {self.layer_scale}")
        length = self.grid_size[0] * self.grid_size[1]
        if not 0.0 < self.mask_ratio < 1.0 or not 0 <= self.num_mask_patches < length:
            raise ConfigError(f"{prefix}.mask_ratio must be in (0, 1) and num_mask_patches in [0, {length}) "
                              f"(0 = use mask_ratio), got {self.mask_ratio} and {self.num_mask_patches}")
        if self.min_mask_patches < 1 or not self.min_mask_patches <= self.masked_count:
            raise ConfigError(f"{prefix}.min_mask_patches must be in [1, {self.masked_count}] (the masked count), "
                              f"got {self.min_mask_patches}")
        if self.max_mask_patches and self.max_mask_patches < self.min_mask_patches:
            raise ConfigError(f"{prefix}.max_mask_patches must be 0 (no limit) or >= min_mask_patches, "
                              f"got {self.max_mask_patches}")
        if not 0.0 < self.mask_min_aspect <= 1.0:
            raise ConfigError(f"{prefix}.mask_min_aspect must be in (0, 1], got {self.mask_min_aspect}")
        check_pixel_statistics(self, prefix)
        if self.target not in TARGETS:
            raise ConfigError(f"{prefix}.target must be one of {', '.join(TARGETS)}, got {self.target!r}")


TARGETS = ("codes", "pixels")


def beitv2_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """unilm beit2/modeling_pretrain.py's trunc_normal_: N(0, std) truncated at +-std (one std, not
    timm's default +-2 absolute), so the values' std is ~0.54 std."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-std, b=std)


@dataclass
class BEiTv2Output(Output):
    """mask: (N, L) bool, True = hidden; targets: (N, L) the tokenizer's codes (None with target="pixels")."""

    mask: torch.Tensor | None = None
    targets: torch.Tensor | None = None


class BEiTv2(PixelPatches, FrozenTokenizerModel):
    """ViT + shared MIM head + patch-aggregation head over a frozen tokenizer's codes
    (normalisation and target="pixels"'s patch targets: PixelPatches)."""

    method_name, config_class = "beitv2", BEiTv2Config
    tokenizer_needs = ("encode", "codebook_size", "grid_size")

    def __init__(self, config: BEiTv2Config):
        config.validate()
        super().__init__(config)
        c = config
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        grid, length = self.patch_embed.grid_size, self.patch_embed.num_patches
        if tuple(self.tokenizer.grid_size) != grid:
            raise ConfigError(f"model.tokenizer's grid {tuple(self.tokenizer.grid_size)} differs from the ViT's patch "
                              f"grid {grid} (model.img_size / model.patch_size): BEiT v2 predicts one code per patch, "
                              f"so use a tokenizer with the same image size and patch grid")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, length + 1, c.embed_dim)) if c.abs_pos_embed else None
        self.rel_pos_bias = RelativePositionBias(grid, c.num_heads)
        # stochastic depth rises linearly over the blocks; the head blocks continue the ramp from early_layers
        rates = torch.linspace(0, c.drop_path, c.depth).tolist()
        head_rates = torch.linspace(0, c.drop_path, max(c.depth, c.early_layers + c.head_layers)).tolist()
        self.blocks = nn.ModuleList(self.make_block(r) for r in rates)
        self.cls_pt_layers = nn.ModuleList(self.make_block(head_rates[c.early_layers + i])
                                           for i in range(c.head_layers))
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        outputs = self.codebook_size if c.target == "codes" else c.patch_size**2 * c.in_chans
        self.lm_head = Linear(c.embed_dim, outputs)
        try:
            self.masking = BlockMasking(grid, c.masked_count, c.min_mask_patches, c.max_mask_patches or None,
                                        c.mask_min_aspect, style="unilm")
        except ValueError as err:
            raise ConfigError(f"model.min_mask_patches / max_mask_patches / mask_min_aspect: {err}") from None
        register_pixel_statistics(self, c)
        self.reset_parameters()

    def make_block(self, drop_path: float) -> Block:
        c = self.config
        return Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=False, qv_bias=True,
                     layer_scale=c.layer_scale or None, drop_path=drop_path, norm_eps=c.norm_eps,
                     attn_impl=c.attn_impl)

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """unilm's BEiT v2 pretraining init: tokens, Linear and Conv2d weights N(0, 0.02) truncated
        at +-0.02 (`beitv2_normal_`), zero biases and relative bias table, unit LayerNorms; the
        aggregation blocks (`cls_pt_layers`) get PyTorch's default Linear / LayerNorm init (the
        reference creates them after its init pass). Then block i's attn.proj / mlp.fc2 weights
        are divided by sqrt(2 i) (the head blocks continue the count after early_layers). The
        tokenizer is left alone."""
        for token in (self.pos_embed, self.cls_token, self.mask_token):
            if token is not None:
                beitv2_normal_(token)
        for name, child in self.named_children():
            if not name.startswith(("tokenizer", "cls_pt_layers")):
                init_vit_weights_(child, beitv2_normal_, types=(nn.Linear, nn.Conv2d))
        for m in self.cls_pt_layers.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()  # kaiming-uniform weights, U(+-1/sqrt(fan_in)) biases; LayerNorm 1 / 0
        layer_ids = [i + 1 for i in range(len(self.blocks))]
        layer_ids += [self.config.early_layers + i + 1 for i in range(len(self.cls_pt_layers))]
        rescale_residual_outputs_([*self.blocks, *self.cls_pt_layers], layer_ids)

    # ------------------------------------------------------------------ helpers
    @property
    def codebook_size(self) -> int:
        return self.tokenizer.codebook_size

    def draw_mask(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, L) bool block masks of exactly config.masked_count hidden patches."""
        return self.masking(n, generator=generator, flat=True).to(device)

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (N, C, H, W) -> the frozen tokenizer's codes (N, L) int64."""
        return self.tokenizer.encode(images).flatten(1).long()

    # ------------------------------------------------------------------ stages
    def embed(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[0, 1] images (N, C, H, W), mask (N, L) bool | None -> tokens (N, 1 + L, D): patch
        embeddings with the mask token at hidden positions, the cls token first."""
        x = self.patch_embed(self.normalize(images))
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return x if self.pos_embed is None else x + self.pos_embed

    def forward_encoder(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                        keep_early: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (last block's output (N, 1 + L, D) before `norm`, and with keep_early the patch
        tokens after block early_layers (N, L, D), else None)."""
        bias = self.rel_pos_bias()
        h, early = self.embed(images, mask), None
        for i, block in enumerate(self.blocks):
            h = block(h, bias)
            if keep_early and i + 1 == self.config.early_layers:
                early = h[:, 1:]
        return h, early

    def forward_aggregation(self, last: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Patch aggregation: [last block's cls; early patch tokens] (N, 1 + L, D) through the
        head blocks -> (N, 1 + L, D) before `norm`."""
        bias = self.rel_pos_bias()
        h = torch.cat([last[:, :1], early], dim=1)
        for block in self.cls_pt_layers:
            h = block(h, bias)
        return h

    def mim_logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The shared MIM head at hidden positions: (N, 1 + L, D), (N, L) bool -> (M, V)."""
        return self.lm_head(self.norm(hidden[:, 1:][mask]))

    def forward(self, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, *, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None, **_) -> BEiTv2Output:
        """images (N, C, H, W) in [0, 1] (labels are ignored); tokens: optional precomputed codes
        (N, h, w) of these images; mask: optional (N, L) or (N, h, w) bool, else drawn (with
        `generator`) -> loss = CE(MIM head) + CE(aggregation head) on the hidden patches (MSE to
        the patches' pixels with target="pixels"; tokens are then ignored)."""
        if images is None:
            raise ValueError("BEiT v2 trains on images (the ViT input); give a batch with 'images', not a token cache")
        n = len(images)
        if self.config.target == "pixels":
            return self.forward_pixels(images, mask, generator)
        targets = self.targets(images) if tokens is None else tokens.flatten(1).long()
        if targets.shape[1] != self.patch_embed.num_patches:
            raise ValueError(f"{targets.shape[1]} codes per image do not match the {self.grid_size} patch grid")
        mask = self.draw_mask(n, images.device, generator) if mask is None else mask.reshape(n, -1).bool()
        target = targets[mask]
        last, early = self.forward_encoder(images, mask, keep_early=bool(self.cls_pt_layers))
        logits = self.mim_logits(last, mask)
        loss_mim = F.cross_entropy(logits.float(), target)
        logs = {"loss_mim": loss_mim.detach(), "accuracy": (logits.argmax(-1) == target).float().mean()}
        loss = loss_mim
        if self.cls_pt_layers:
            logits_agg = self.mim_logits(self.forward_aggregation(last, early), mask)
            loss_agg = F.cross_entropy(logits_agg.float(), target)
            loss = loss + loss_agg
            logs |= {"loss_agg": loss_agg.detach(), "accuracy_agg": (logits_agg.argmax(-1) == target).float().mean()}
        return BEiTv2Output(loss=loss, logs={"loss": loss.detach(), **logs}, mask=mask, targets=targets)

    def forward_pixels(self, images: torch.Tensor, mask: torch.Tensor | None,
                       generator: torch.Generator | None) -> BEiTv2Output:
        """target="pixels": the same masking, ViT and heads, regressing each hidden patch's
        normalised pixels (M, p*p*C) with MSE; loss = MSE(MIM head) + MSE(aggregation head)."""
        n = len(images)
        mask = self.draw_mask(n, images.device, generator) if mask is None else mask.reshape(n, -1).bool()
        target = self.target(self.normalize(images))[mask]
        last, early = self.forward_encoder(images, mask, keep_early=bool(self.cls_pt_layers))
        loss = loss_mim = F.mse_loss(self.mim_logits(last, mask).float(), target)
        logs = {"loss_mim": loss_mim.detach()}
        if self.cls_pt_layers:
            loss_agg = F.mse_loss(self.mim_logits(self.forward_aggregation(last, early), mask).float(), target)
            loss = loss + loss_agg
            logs["loss_agg"] = loss_agg.detach()
        return BEiTv2Output(loss=loss, logs={"loss": loss.detach(), **logs}, mask=mask)

    # ------------------------------------------------------------------ downstream use
    def features(self, images: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, D): the unmasked ViT's normed cls token
        (pool="cls") or the mean of its normed patch tokens (pool="mean"); no aggregation head."""
        hidden, _ = self.forward_encoder(images)
        return pool_tokens(self.norm(hidden), pool)


# ------------------------------------------------------------------------------ presets
def imagenet_recipe() -> dict:
    """The paper's ViT-B/16 recipe on ImageNet-1k: 300 epochs at batch 2048 (128 x 16 accumulation
    here), lr 1.5e-3, 10 warmup epochs, AdamW (0.9, 0.98), wd 0.05, clip 3.0, 75 of 196 patches
    block-masked (--num_mask_patches 75, blocks of >= 16 before rounding), layer scale 0.1, drop
    path 0 (unilm's PRETRAINING.md: 0 for 300 epochs, 0.1 and betas (0.9, 0.999) for 1600). Set
    model.tokenizer to a trained VQ-KD run and data.name to the ImageNet train folder."""
    steps_per_epoch = 1_281_167 // 2048
    return {
        "method": "beitv2",
        "model": {"tokenizer": "", "img_size": 224, "patch_size": 16, "in_chans": 3, "embed_dim": 768,
                  "depth": 12, "num_heads": 12, "early_layers": 9, "head_layers": 2, "num_mask_patches": 75,
                  "min_mask_patches": 16, "layer_scale": 0.1, "drop_path": 0.0},
        "data": {"name": "imagenet/train", "image_size": 224, "crop_scale": [0.2, 1.0], "num_workers": 8},
        "optim": {"lr": 1.5e-3, "min_lr": 1e-5, "weight_decay": 0.05, "betas": [0.9, 0.98],
                  "warmup_steps": 10 * steps_per_epoch, "clip_grad": 3.0},
        "train": {"steps": 300 * steps_per_epoch, "batch_size": 128, "accum_steps": 16, "ckpt_every": 5000},
    }


def fmnist_recipe(steps: int = 1000, batch_size: int = 64, lr: float = 1e-3, **model) -> dict:
    """BEiT v2 on Fashion-MNIST, 28 px grey, patch 4 -> 7x7 patches, 20 of 49 (~40%) block-masked
    with rectangles of >= 4 patches; the VQ-KD tokenizer of `mimkit train vqkd_fmnist --out
    runs/vqkd_fmnist` (same 7x7 grid). A 128-d x 4 ViT (aggregation from block 3, 2 head blocks)
    sized for ~20 minutes on one busy CPU thread (< 1 epoch): no drop path on so short a run."""
    base = {"tokenizer": "runs/vqkd_fmnist", "img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 128,
            "depth": 4, "num_heads": 4, "early_layers": 3, "head_layers": 2, "mask_ratio": 0.4,
            "min_mask_patches": 4, "layer_scale": 0.1, "drop_path": 0.0}
    return {
        "method": "beitv2",
        "model": base | model,
        "data": {"name": "fashion-mnist", "image_size": 28, "crop_scale": [0.2, 1.0]},
        "optim": {"lr": lr, "weight_decay": 0.05, "betas": [0.9, 0.98], "warmup_steps": steps // 20,
                  "clip_grad": 3.0},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "log_every": 25},
    }


PRESETS = {
    "beitv2_vit_base_patch16": imagenet_recipe(),
    "beitv2_fmnist": fmnist_recipe(),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "beitv2_vit_base_patch16": (
        "BEiT v2 paper's ViT-B/16 ImageNet-1k recipe: 75 of 196 patches block-masked, batch 2048, lr 1.5e-3, 300 "
        "epochs; give model.tokenizer (a VQ-KD run) and data.name"),
    "beitv2_fmnist": (
        "CPU BEiT v2 on Fashion-MNIST predicting vqkd_fmnist's 7x7 codes, 20 of 49 patches block-masked, 1000 steps "
        "of 64; measured linear probe +22.2 (mean pool, 600 steps) over a weak random init"),
}
