"""MaskGIT: Masked Generative Image Transformer (Chang et al., CVPR 2022), stage 2.

A bidirectional transformer over [class token; L image tokens] of a frozen VQGAN. Training draws
r ~ U(0, 1) per image, replaces ceil(gamma(r) * L) uniformly chosen tokens by [MASK] (gamma = the
mask schedule) and minimises the label-smoothed cross-entropy on those tokens only. Labels drop to
a null class with p = label_dropout so classifier-free guidance works at sampling time; an
unconditional model always uses the null class. Sampling lives in `mimkit.generation`, which needs
only `token_logits`.

Two transformers (config.architecture):
- "pre_ln" (the default, and every preset that trains): pre-LayerNorm ViT blocks (mimkit's Block,
  exact GELU) with the class as its own embedding row. Pre-LN trains stably without BERT's warm-up
  care and shares its blocks, init and kernels with MAE and MAGE; presets trained with it keep it.
- "bert": google-research/maskgit's maskgit_transformer.py, so its released weights load
  (mimkit convert maskgit-flax-transformer): post-LN layers (BertLayer), tanh GELU, one token table
  of codebook (V), then the C class ids (label + V), [MASK] last (id V + C; the official -1 wraps to
  it), the class id at position 0, and BERT's MLM head with a bias over the whole table, cut to the
  codebook for the loss and for sampling. The official code has no null class; here "no label"
  (unconditional, label dropout) puts [MASK] at the class position.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import (SCHEDULES, BertEmbedding, BertLayer, BertMlmHead, TiedTokenHead, num_masked_for_training, pool_tokens,
                  uniform_noise)
from .output import Output
from .token_model import MaskedTokenModel, TokenModelConfig


ARCHITECTURES = ("pre_ln", "bert")


@dataclass
class MaskGITConfig(TokenModelConfig):
    """The schedule and the paper's transformer depth (24 x 768, 16 heads); tokenizer, classes and
    the other transformer fields: see TokenModelConfig. architecture: "pre_ln" (mimkit's blocks) or
    "bert" (the official post-LN transformer, for its released weights; give it norm_eps 1e-12)."""

    depth: int = 24
    num_heads: int = 16
    schedule: str = "cosine"
    architecture: str = "pre_ln"

    def validate(self, prefix: str = "model") -> None:
        self.validate_tokens(prefix)
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"{prefix}.architecture must be one of {', '.join(ARCHITECTURES)}, "
                              f"got {self.architecture!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{prefix}.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")


class MaskGIT(MaskedTokenModel):
    """Bidirectional transformer over VQ tokens; `forward` is the masked-token training loss."""

    method_name, config_class = "maskgit", MaskGITConfig

    def __init__(self, config: MaskGITConfig):
        config.validate()
        super().__init__(config)
        c, d = config, config.embed_dim
        self.bert = c.architecture == "bert"
        if self.bert:  # one table: codes, classes, [MASK]; positions: class + L tokens
            vocab = self.codebook_size + c.num_classes + 1
            self.embed = BertEmbedding(vocab, self.num_tokens + 1, d, c.dropout, c.norm_eps)
            self.blocks = nn.ModuleList(BertLayer(d, c.num_heads, int(d * c.mlp_ratio), c.dropout, c.dropout,
                                                  c.norm_eps, c.attn_impl) for _ in range(c.depth))
            self.head = BertMlmHead(d, vocab, c.norm_eps)
        else:
            self.embed = self.token_embedding()
            self.blocks = self.transformer_blocks(d, c.num_heads, c.depth)
            self.norm = nn.LayerNorm(d, eps=c.norm_eps)
            self.head = TiedTokenHead(d, d, self.codebook_size, c.norm_eps)
        self.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        return {"embed.position_embeddings.weight"} if self.bert else {"embed.pos_embed"}

    @property
    def mask_token_id(self) -> int:
        """[MASK]'s id: V (one past the codebook), or V + num_classes (the last row) for "bert"."""
        return self.codebook_size + (self.config.num_classes if self.bert else 0)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) of image positions -> logits (..., V) over the codebook (the "bert" head's
        class and [MASK] columns cut off)."""
        if self.bert:
            return self.head(hidden, self.embed.word_embeddings.weight)[..., : self.codebook_size]
        return self.head(hidden, self.embed.tokens.weight)

    # ------------------------------------------------------------------ stages
    def hidden_states(self, tokens: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """tokens (N, L) with mask_token_id at unknown positions, labels (N,) | None -> normed
        hidden states (N, 1 + L, D), the class position first (`generator`: label dropout's)."""
        rows = self.class_rows(labels, len(tokens), tokens.device, generator)
        if self.bert:  # class id = V + row; the null row (num_classes) is [MASK]'s id
            h = self.embed(torch.cat([(rows + self.codebook_size)[:, None], tokens], 1))
        else:
            h = self.embed(tokens, rows)
        for block in self.blocks:
            h = block(h)
        return h if self.bert else self.norm(h)  # post-LN layers end normed

    def token_logits(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, L) (mask_token_id = unknown), labels (N,) (-1 = none) or None -> logits (N, L, V)."""
        return self.logits(self.hidden_states(tokens, labels)[:, 1:])

    def draw_mask(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, L) bool, True at ceil(gamma(r) * L) uniformly chosen positions, r ~ U(0, 1) per image;
        r and the order are drawn with `generator` (or the global RNG)."""
        length = self.num_tokens
        counts = num_masked_for_training(self.config.schedule, uniform_noise((n,), None, generator), length).to(device)
        rank = uniform_noise((n, length), device, generator).argsort(1).argsort(1)
        return rank < counts[:, None]

    def forward(self, tokens: torch.Tensor | None = None, images: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, generator: torch.Generator | None = None, **_) -> Output:
        """A batch of cached codes `tokens` (N, h, w) or `images` (N, C, H, W) in [0, 1], optional
        labels (N,) -> Output(loss, logs: loss, accuracy on masked tokens, mask_fraction). The mask
        and the label dropout are drawn with `generator` (or the global RNG)."""
        target = self.batch_tokens(tokens, images)
        mask = self.draw_mask(len(target), target.device, generator)
        hidden = self.hidden_states(target.masked_fill(mask, self.mask_token_id), labels, generator)
        # the head runs on the masked positions only: the others carry no loss
        logits = self.logits(hidden[:, 1:][mask])
        loss, accuracy = self.masked_token_loss(logits, target[mask])
        return Output(loss=loss, logs={"loss": loss.detach(), "accuracy": accuracy,
                                       "mask_fraction": mask.float().mean()})

    def features(self, images: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> (N, D): mean of the image tokens' hidden states with no
        mask and no label (pool="mean"), or the class position's (pool="cls")."""
        return pool_tokens(self.hidden_states(self.batch_tokens(None, images), None), pool)


# ------------------------------------------------------------------------------ presets
def imagenet_recipe() -> dict:
    """The paper's class-conditional ImageNet 256 recipe (the MaskGIT VQGAN f16, 16x16 tokens) on the
    official transformer (architecture "bert": 24 post-LN layers x 768, 16 heads, MLP 3072, LayerNorm
    eps 1e-12, dropout 0.1), the shape of the released maskgit_imagenet256_checkpoint: Adam(0.9, 0.96)
    lr 1e-4 at batch 256, wd 0.045, 300 epochs, label smoothing 0.1, no label dropout
    (google-research/maskgit's maskgit_class_cond_config has none: the paper samples without
    classifier-free guidance). The tokenizer folder: a trained maskgit_vqgan run or
    `mimkit convert maskgit-flax-tokenizer tokenizer_imagenet256_checkpoint runs/maskgit_vqgan_imagenet`."""
    steps_per_epoch = 1_281_167 // 256
    return {
        "method": "maskgit",
        "model": {"tokenizer": "runs/maskgit_vqgan_imagenet", "num_classes": 1000, "embed_dim": 768, "depth": 24,
                  "num_heads": 16, "mlp_ratio": 4.0, "dropout": 0.1, "label_smoothing": 0.1,
                  "label_dropout": 0.0, "architecture": "bert", "norm_eps": 1e-12},
        "data": {"name": "imagenet/train", "image_size": 256, "crop_scale": [0.8, 1.0], "num_workers": 8},
        "optim": {"blr": 1e-4, "weight_decay": 0.045, "betas": [0.9, 0.96], "warmup_steps": 5000},
        "train": {"steps": 300 * steps_per_epoch, "batch_size": 256, "ckpt_every": 5000},
    }


def fmnist_recipe(steps: int = 2000, batch_size: int = 64, blr: float = 2e-3, **model) -> dict:
    """Class-conditional MaskGIT on the 8x8 codes of `vqgan_fmnist` (trained into runs/vq_fmnist),
    read from the token cache `mimkit tokenize runs/vq_fmnist --crops 2 --out runs/vq_fmnist_cache`
    writes. Sized for ~25 minutes on one CPU thread (~2 epochs); no dropout on so short a run."""
    base = {"tokenizer": "runs/vq_fmnist", "num_classes": 10, "embed_dim": 192, "depth": 4, "num_heads": 6,
            "mlp_ratio": 4.0, "dropout": 0.0, "label_smoothing": 0.1}
    base.update(model)
    return {
        "method": "maskgit",
        "model": base,
        "data": {"name": "runs/vq_fmnist_cache", "image_size": 32},
        "optim": {"blr": blr, "weight_decay": 0.045, "betas": [0.9, 0.96], "warmup_steps": steps // 20},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "log_every": 20,
                  "picture_every": steps // 4},
    }


PRESETS = {
    "maskgit_imagenet_256": imagenet_recipe(),
    "maskgit_fmnist": fmnist_recipe(),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "maskgit_imagenet_256": (
        "MaskGIT paper's class-conditional ImageNet 256 recipe on the official post-LN transformer (24x768, the "
        "released checkpoint's shape) over MaskGIT VQGAN f16 codes: Adam (0.9, 0.96) lr 1e-4 at batch 256, wd 0.045, "
        "label smoothing 0.1, 300 epochs"),
    "maskgit_fmnist": (
        "CPU class-conditional MaskGIT on vqgan_fmnist's cached 8x8 codes, 2000 steps of 64 (~2 epochs); measured "
        "FID 7.77 (12 steps, classifier_fmnist features), CAS 75.4%"),
}
