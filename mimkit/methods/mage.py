"""MAGE: MAsked Generative Encoder (Li et al., CVPR 2023), with MAGE-C and class conditioning.

One model for generation and representation: masked token modeling on frozen VQGAN codes with one
mask ratio per batch from N(0.55, 0.25) truncated to [0.5, 1]. Of the L tokens, drop_ratio * L
(all from the masked set) are dropped from the encoder input; the other masked ones enter as
[MASK]; a class token goes first (a learned "fake class" row, or the image's class for the
class-conditional variant, dropped to the fake class with p = label_dropout for guidance). The
encoder output is padded back to L positions with the encoder's class-position output at every
masked or dropped slot, and a ViT decoder predicts the tokens through an output layer tied to the
token embedding; label-smoothed cross-entropy on the masked tokens. As in the official code, the
output layer reads a detached copy of the token table (see `head_table`), and the init is the
official one (see `reset_parameters`), not MaskGIT's.

MAGE-C (contrastive_weight > 0): the batch carries two views (`tokens`/`tokens_2` or
`images`/`images_2`); each view's encoder output is average-pooled, projected by a 2-layer MLP,
l2-normalised, and an InfoNCE (SimCLR NT-Xent) loss over the 2N views is added with weight lambda.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn import Linear, TiedTokenHead, gather_tokens, pool_tokens, truncated_normal_ratio, uniform_noise
from ..nn.init import init_vit_weights_
from .output import Output
from .token_model import MaskedTokenModel, TokenModelConfig


@dataclass
class MAGEConfig(TokenModelConfig):
    """The decoder's size, the variable mask ratio, token dropping and MAGE-C's contrastive head
    (tokenizer, classes and the encoder's size, ViT-B by default: see TokenModelConfig)."""

    decoder_embed_dim: int = 768
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio_mean: float = 0.55
    mask_ratio_std: float = 0.25
    mask_ratio_min: float = 0.5
    mask_ratio_max: float = 1.0
    drop_ratio: float = 0.5
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.2
    projection_hidden_dim: int = 2048
    projection_dim: int = 256

    def validate(self, prefix: str = "model") -> None:
        self.validate_tokens(prefix, (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")))
        if not 0.0 <= self.mask_ratio_min <= self.mask_ratio_max <= 1.0 or self.mask_ratio_std < 0:
            raise ConfigError(f"{prefix}.mask_ratio_min/max must satisfy 0 <= min <= max <= 1 and mask_ratio_std "
                              f">= 0, got [{self.mask_ratio_min}, {self.mask_ratio_max}], std {self.mask_ratio_std}")
        if not 0.0 <= self.drop_ratio <= self.mask_ratio_min or self.drop_ratio >= 1.0:
            raise ConfigError(f"{prefix}.drop_ratio must be in [0, mask_ratio_min={self.mask_ratio_min}] (only masked "
                              f"tokens are dropped) and < 1, got {self.drop_ratio}")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ConfigError(f"{prefix}.contrastive_weight must be >= 0 and contrastive_temperature > 0, got "
                              f"{self.contrastive_weight} and {self.contrastive_temperature}")
        if min(self.projection_hidden_dim, self.projection_dim) <= 0:
            raise ConfigError(f"{prefix}.projection_hidden_dim and projection_dim must be positive")


def info_nce(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent over 2N l2-normalised embeddings z (2N, Z) where rows i and i + N are two
    views of one image -> (loss, top-1 accuracy of finding the positive among the 2N - 1 others)."""
    n2 = len(z)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(n2, device=z.device).roll(n2 // 2)
    return F.cross_entropy(sim, positives), (sim.argmax(1) == positives).float().mean().detach()


class MAGE(MaskedTokenModel):
    """ViT encoder-decoder over VQ tokens with a variable mask ratio and token dropping."""

    method_name, config_class = "mage", MAGEConfig

    @classmethod
    def input_views(cls, config: MAGEConfig) -> int:
        """MAGE-C (contrastive_weight > 0) trains on two views of every image, MAGE on one."""
        return 2 if config.contrastive_weight > 0 else 1

    def __init__(self, config: MAGEConfig):
        config.validate()
        super().__init__(config)
        c, d, dd = config, config.embed_dim, config.decoder_embed_dim
        self.embed = self.token_embedding()
        self.blocks = self.transformer_blocks(d, c.num_heads, c.depth)
        self.norm = nn.LayerNorm(d, eps=c.norm_eps)
        self.decoder_embed = Linear(d, dd)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_tokens, dd))
        self.decoder_blocks = self.transformer_blocks(dd, c.decoder_num_heads, c.decoder_depth)
        self.decoder_norm = nn.LayerNorm(dd, eps=c.norm_eps)
        # official MlmLayer: nn.LayerNorm with PyTorch's default eps 1e-5 (the blocks use 1e-6)
        self.head = TiedTokenHead(dd, d, self.codebook_size, norm_eps=1e-5)
        if c.contrastive_weight > 0:
            self.projector = nn.Sequential(nn.Linear(d, c.projection_hidden_dim),
                                           nn.BatchNorm1d(c.projection_hidden_dim), nn.ReLU(inplace=True),
                                           nn.Linear(c.projection_hidden_dim, c.projection_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official MAGE's init (LTH14/mage models_mage.py), not MaskGIT's truncated normal: the token
        table (codes and [MASK]), the class rows and the input positions (BertEmbeddings: word and
        position embeddings) and the decoder positions (decoder_pos_embed_learned) N(0, 0.02), not
        truncated; every Linear xavier-uniform with zero bias (_init_weights, after the JAX ViT),
        the fused qkv included, and the head's dense; LayerNorms ones / zeros; the head's bias zero.
        The projector's BatchNorm (MAGE-C) keeps PyTorch's default. Skips the frozen tokenizer."""
        for m in (self.embed.tokens, self.embed.classes):
            nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.embed.pos_embed, std=0.02)
        nn.init.normal_(self.decoder_pos_embed, std=0.02)
        init_vit_weights_(self, skip="tokenizer")
        nn.init.zeros_(self.head.bias)

    def head_table(self) -> torch.Tensor:
        """The token table the tied output layer predicts against, detached from autograd, as the
        official forward_decoder passes token_emb.word_embeddings.weight.data.detach() to its
        MlmLayer: the prediction loss trains the head (dense, norm, bias) and everything before it,
        but the table itself learns only through the input embedding. (MaskGIT's head reads the
        live table.)"""
        return self.embed.tokens.weight.detach()

    def no_weight_decay(self) -> set[str]:
        return {"embed.pos_embed", "decoder_pos_embed"}

    # ------------------------------------------------------------------ masking
    def draw_masks(self, n: int, device, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One ratio for the batch -> (mask (N, L) bool: masked incl. dropped, ids_keep (N, L - drop)
        int64: encoder positions, sorted; ratio). The dropped tokens are the first drop_ratio * L of
        each image's random order, the masked ones its first ceil(ratio * L). The ratio and the
        order are drawn with `generator` (a CPU generator) or the global RNG."""
        c, length = self.config, self.num_tokens
        ratio = truncated_normal_ratio(c.mask_ratio_mean, c.mask_ratio_std, c.mask_ratio_min, c.mask_ratio_max,
                                       generator=generator)
        num_drop = int(c.drop_ratio * length)
        num_masked = min(max(math.ceil(ratio * length), num_drop, 1), length)
        order = uniform_noise((n, length), device, generator).argsort(1)
        rank = order.argsort(1)
        ids_keep = order[:, num_drop:].sort(1).values
        return rank < num_masked, ids_keep, ratio

    # ------------------------------------------------------------------ stages
    def encode(self, tokens: torch.Tensor, labels: torch.Tensor | None, ids_keep: torch.Tensor | None = None,
               generator: torch.Generator | None = None):
        """tokens (N, L) (mask_token_id at [MASK] inputs), labels, ids_keep (N, K) positions the
        encoder sees (None: all) -> normed encoder output (N, 1 + K, D), class position first
        (`generator`: label dropout's)."""
        h = self.embed(tokens, self.class_rows(labels, len(tokens), tokens.device, generator))
        if ids_keep is not None:
            h = torch.cat([h[:, :1], gather_tokens(h[:, 1:], ids_keep)], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def decode(self, latent: torch.Tensor, mask: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """latent (N, 1 + K, D), mask (N, L) bool, ids_keep (N, K) | None -> decoder output (N, L, Dd).

        Every masked or dropped slot is filled with the (embedded) encoder output at the class
        position; the other slots get their own encoder output back in place.
        """
        h = self.decoder_embed(latent)
        cls = h[:, :1]
        n, length = mask.shape
        if ids_keep is None:
            full = h[:, 1:]
        else:
            full = cls.expand(n, length, -1).scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]), h[:, 1:])
        full = torch.where(mask.unsqueeze(-1), cls, full)
        x = torch.cat([cls, full], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x)[:, 1:]

    def token_logits(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, L) (mask_token_id = unknown), labels (N,) (-1 = none) or None -> logits (N, L, V).
        No token dropping at generation time: every position enters the encoder."""
        mask = tokens == self.mask_token_id
        return self.head(self.decode(self.encode(tokens, labels), mask), self.head_table())

    def forward(self, tokens: torch.Tensor | None = None, images: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, tokens_2: torch.Tensor | None = None,
                images_2: torch.Tensor | None = None, *, generator: torch.Generator | None = None, **_) -> Output:
        """Cached codes `tokens` (N, h, w) or `images` (N, C, H, W) in [0, 1], optional labels (N,);
        MAGE-C also needs the second view `tokens_2` / `images_2`. -> Output(loss, logs). The mask
        ratio, the masks and the label dropout are drawn with `generator` (or the global RNG)."""
        target = self.batch_tokens(tokens, images)
        contrastive = self.config.contrastive_weight > 0
        if contrastive:
            if tokens_2 is None and images_2 is None:
                raise ValueError("MAGE-C (model.contrastive_weight > 0) needs two views per image: set "
                                 "data.views=2 (a token cache with crop views, or augmented images)")
            target = torch.cat([target, self.batch_tokens(tokens_2, images_2)])
            labels = None if labels is None else torch.cat([labels, labels])
        n = len(target)
        mask, ids_keep, ratio = self.draw_masks(n, target.device, generator)
        latent = self.encode(target.masked_fill(mask, self.mask_token_id), labels, ids_keep, generator)
        decoded = self.decode(latent, mask, ids_keep)
        logits = self.head(decoded[mask], self.head_table())
        loss, accuracy = self.masked_token_loss(logits, target[mask])
        logs = {"reconstruction_loss": loss.detach(), "accuracy": accuracy, "mask_ratio": torch.tensor(ratio)}
        if contrastive:
            z = F.normalize(self.projector(latent[:, 1:].mean(1)), dim=-1)
            c_loss, c_accuracy = info_nce(z, self.config.contrastive_temperature)
            loss = loss + self.config.contrastive_weight * c_loss
            logs.update(contrastive_loss=c_loss.detach(), contrastive_accuracy=c_accuracy)
        logs["loss"] = loss.detach()
        return Output(loss=loss, logs=logs)

    def features(self, images: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, D): the average-pooled encoder output over the image
        tokens with no mask and no label (pool="mean"), or its class position (pool="cls")."""
        return pool_tokens(self.encode(self.batch_tokens(None, images), None), pool)


# ------------------------------------------------------------------------------ presets
def imagenet_recipe(embed_dim: int = 768, depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 768,
                    batch_size: int = 4096) -> dict:
    """The official ImageNet 256 recipe (LTH14/mage README and main_pretrain.py): 1600 epochs, 40
    warmup, AdamW(0.9, 0.95) blr 1.5e-4, wd 0.05, grad clip 3.0, decoder 8 x decoder_embed_dim (16
    heads; models_mage.py: 768 for ViT-B, 1024 for ViT-L), RandomResizedCrop(0.2, 1), over MaskGIT's
    VQGAN (maskgit_vqgan_imagenet_256, or MAGE's own through `mimkit convert mage-official`)."""
    steps_per_epoch = 1_281_167 // batch_size
    return {
        "method": "mage",
        "model": {"tokenizer": "runs/maskgit_vqgan", "embed_dim": embed_dim, "depth": depth,
                  "num_heads": num_heads, "decoder_embed_dim": decoder_embed_dim, "decoder_depth": 8,
                  "decoder_num_heads": 16},
        "data": {"name": "imagenet/train", "image_size": 256, "crop_scale": [0.2, 1.0], "num_workers": 8},
        "optim": {"blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95], "clip_grad": 3.0,
                  "warmup_steps": 40 * steps_per_epoch},
        "train": {"steps": 1600 * steps_per_epoch, "batch_size": batch_size, "ckpt_every": 5000},
    }


def fmnist_recipe(steps: int = 1500, batch_size: int = 64, blr: float = 2e-3, views: int = 1, **model) -> dict:
    """MAGE on the 8x8 codes of `vqgan_fmnist` from its token cache (views=2: two cached views
    per image for MAGE-C; the cache needs crop views, `mimkit tokenize ... --crops 2`). Sized for
    ~20 minutes on one CPU thread (MAGE-C: twice that, two views per image)."""
    base = {"tokenizer": "runs/vq_fmnist", "embed_dim": 192, "depth": 4, "num_heads": 6,
            "decoder_embed_dim": 128, "decoder_depth": 2, "decoder_num_heads": 4, "dropout": 0.0,
            "projection_hidden_dim": 512, "projection_dim": 128}
    base.update(model)
    return {
        "method": "mage",
        "model": base,
        "data": {"name": "runs/vq_fmnist_cache", "image_size": 32, "views": views},
        "optim": {"blr": blr, "weight_decay": 0.05, "betas": [0.9, 0.95], "clip_grad": 3.0,
                  "warmup_steps": steps // 20},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "log_every": 20,
                  "picture_every": steps // 4},
    }


PRESETS = {
    "mage_vit_base_imagenet_256": imagenet_recipe(),
    "mage_vit_large_imagenet_256": imagenet_recipe(1024, 24, 16, decoder_embed_dim=1024, batch_size=2048),
    "mage_fmnist": fmnist_recipe(),
    "magec_fmnist": fmnist_recipe(views=2, contrastive_weight=1.0),
    "mage_cond_fmnist": fmnist_recipe(num_classes=10),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "mage_vit_base_imagenet_256": (
        "MAGE's official ViT-B ImageNet 256 recipe on MaskGIT VQGAN f16 codes: mask ratio N(0.55, 0.25) in [0.5, 1], "
        "AdamW blr 1.5e-4, batch 4096, 1600 epochs, 40 warmup (README / main_pretrain.py)"),
    "mage_vit_large_imagenet_256":
        "MAGE's official ViT-L: 1024x24 encoder, decoder 1024x8 (models_mage.py), the mage_vit_base_imagenet_256 "
        "recipe at batch 2048",
    "mage_fmnist": (
        "CPU MAGE (unconditional) on vqgan_fmnist's cached 8x8 codes, 1500 steps of 64; measured linear probe 75.7% "
        "(+8.9 over random init)"),
    "magec_fmnist": (
        "CPU MAGE-C: mage_fmnist + InfoNCE (weight 1) on two cached views per image (`mimkit tokenize --crops 2`); "
        "measured linear probe 80.4% (+13.8 over random init)"),
    "mage_cond_fmnist": (
        "CPU class-conditional MAGE: mage_fmnist with the 10 Fashion-MNIST labels (dropped with p 0.1 for "
        "classifier-free guidance)"),
}
