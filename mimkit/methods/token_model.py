"""What MaskGIT and MAGE share (BEiT v2 shares the frozen tokenizer): a frozen VQ tokenizer inside
the model, the transformer's config fields, blocks and init, the token source of a batch (cached
codes or images), class conditioning with label dropout, and the masked-token loss.

A token model holds its tokenizer as a frozen sub-module, so one checkpoint can sample images
(`mimkit generate CKPT`) with no other file. `config.tokenizer` names the trained tokenizer's
run folder or checkpoint; `mimkit train` copies that checkpoint's config into
`config.tokenizer_config` (saved in config.json) and its weights into the model, so a saved token
model rebuilds without the tokenizer's folder.

The interface `mimkit.generation` samples through (see `token_logits`):
    codebook_size V, mask_token_id (= V), num_classes (0 = unconditional), grid_size (h, w),
    tokenizer.encode / tokenizer.decode, token_logits(tokens (N, L), labels (N,) | None) -> (N, L, V).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config_schema import from_dict
from ..errors import ConfigError
from ..nn import Block, TokenEmbedding, uniform_noise
from ..tokenizers.table import tokenizer_class
from .base import Method
from .vit_config import TransformerConfig

NO_LABEL = -1  # a label value meaning "unconditional" (the null class) in batches and token_logits


@dataclass
class FrozenTokenizerConfig:
    """Fields of every model that holds a frozen tokenizer (token models, BEiT v2).

    tokenizer: run folder or checkpoint of the trained tokenizer (read by `mimkit train`).
    tokenizer_config: {"method": ..., "model": {...}} of that tokenizer, filled in by `mimkit train`.
    """

    tokenizer: str = ""
    tokenizer_config: dict = field(default_factory=dict)

    def validate_tokenizer(self, prefix: str) -> None:
        if self.tokenizer_config and set(self.tokenizer_config) != {"method", "model"}:
            raise ConfigError(f"{prefix}.tokenizer_config must hold exactly 'method' and 'model', "
                              f"got keys {sorted(self.tokenizer_config)}")


@dataclass
class TokenModelConfig(FrozenTokenizerConfig, TransformerConfig):
    """Fields every masked token model has (MaskGITConfig and MAGEConfig extend it).

    num_classes: 0 = unconditional; C > 0 = class-conditional on labels 0..C-1.
    label_dropout: probability of replacing a label by the null class in training (for guidance).
    label_smoothing: of the cross-entropy on masked tokens.
    depth: blocks of the (encoder) transformer over the tokens, ViT-B's 12 by default (its width and
    the blocks' details: TransformerConfig); dropout: in every block (also on the attention weights).
    """

    num_classes: int = 0
    label_dropout: float = 0.1
    label_smoothing: float = 0.1
    depth: int = 12
    dropout: float = 0.1

    def validate_tokens(self, prefix: str,
                        widths: tuple[tuple[str, str], ...] = (("embed_dim", "num_heads"),)) -> None:
        """The class, tokenizer and transformer fields; `widths`: the (width, heads) field pairs to check."""
        if self.num_classes < 0:
            raise ConfigError(f"{prefix}.num_classes must be >= 0 (0 = unconditional), got {self.num_classes}")
        for name in ("label_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{prefix}.{name} must be in [0, 1), got {getattr(self, name)}")
        self.validate_tokenizer(prefix)
        for dim, heads in widths:
            d, h = getattr(self, dim), getattr(self, heads)
            if d <= 0 or h <= 0 or d % h:
                raise ConfigError(f"{prefix}.{dim}={d} must be positive and divisible by {prefix}.{heads}={h}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout must be in [0, 1), got {self.dropout}")


GENERATIVE_TOKENIZER = ("encode", "decode", "codebook_size", "grid_size")


def build_frozen_tokenizer(spec: dict, prefix: str = "model", needs: tuple[str, ...] = GENERATIVE_TOKENIZER) -> nn.Module:
    """{"method": "vqgan", "model": {...}} -> that tokenizer, frozen (no grad, eval mode).
    needs: the attributes the tokenizer must have (ConfigError otherwise); token models also decode."""
    if not spec:
        raise ConfigError(f"{prefix}.tokenizer is not set: give the run folder or checkpoint of a trained "
                          f"tokenizer, e.g. `mimkit train vqgan_fmnist --out runs/vq_fmnist` then "
                          f"{prefix}.tokenizer=runs/vq_fmnist")
    try:
        cls = tokenizer_class(spec["method"])
    except ConfigError as err:
        raise ConfigError(f"{prefix}.tokenizer_config: {err}") from None
    tokenizer = cls(from_dict(cls.config_class, spec["model"], f"{prefix}.tokenizer_config.model"))
    for needed in needs:
        if not hasattr(tokenizer, needed):
            raise ConfigError(f"{prefix}.tokenizer_config: method {spec['method']!r} is not a tokenizer "
                              f"(it has no {needed})")
    return tokenizer.requires_grad_(False).eval()


class FrozenTokenizerModel(Method):
    """Base of models holding a frozen tokenizer as `self.tokenizer` (keys tokenizer.*): built from
    config.tokenizer_config with the attributes `tokenizer_needs`, never trained, always in eval mode."""

    tokenizer_needs: tuple[str, ...] = GENERATIVE_TOKENIZER
    frozen_tokenizer = True

    def __init__(self, config: FrozenTokenizerConfig):
        super().__init__()
        self.config = config
        self.tokenizer = build_frozen_tokenizer(config.tokenizer_config, needs=self.tokenizer_needs)

    def train(self, mode: bool = True):
        """Train/eval mode for the model; the tokenizer always stays in eval mode (its quantizer
        must not update its codebook)."""
        super().train(mode)
        self.tokenizer.eval()
        return self


class MaskedTokenModel(FrozenTokenizerModel):
    """Base of MaskGIT and MAGE: the frozen tokenizer, the transformer's pieces and init, the token
    source and class conditioning.

    Random draws in training (masks, label dropout) take an optional `generator` (a CPU
    torch.Generator, as BEiT v2's; drawn on the CPU and moved to the batch's device); without one
    they come from the global RNG. Dropout layers always use the global RNG."""

    generates = True

    # ------------------------------------------------------------------ building blocks
    def token_embedding(self) -> TokenEmbedding:
        """The input embedding: codebook_size + 1 token rows ([MASK] last), num_classes + 1 class
        rows (the null class last) and num_tokens + 1 positions, of width config.embed_dim."""
        c = self.config
        return TokenEmbedding(self.codebook_size + 1, c.num_classes + 1, self.num_tokens, c.embed_dim, c.dropout,
                              c.norm_eps)

    def transformer_blocks(self, dim: int, num_heads: int, depth: int) -> nn.ModuleList:
        """`depth` pre-LayerNorm ViT blocks of width `dim` with the config's mlp_ratio, dropout (on
        the residual branches and the attention weights), norm_eps and attn_impl."""
        c = self.config
        return nn.ModuleList(Block(dim, num_heads, c.mlp_ratio, dropout=c.dropout, attn_drop=c.dropout,
                                   norm_eps=c.norm_eps, attn_impl=c.attn_impl) for _ in range(depth))

    def reset_parameters(self) -> None:
        """BERT/MaskGIT init: N(0, 0.02) (truncated at 2 std) linears, embeddings and positions, zero
        biases, unit LayerNorms, in module order. Skips the frozen tokenizer."""
        for name, m in self.named_modules():
            if name.startswith("tokenizer"):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, TokenEmbedding):
                nn.init.trunc_normal_(m.pos_embed, std=0.02, a=-0.04, b=0.04)

    # ------------------------------------------------------------------ interface
    @property
    def codebook_size(self) -> int:
        return self.tokenizer.codebook_size

    @property
    def mask_token_id(self) -> int:
        """The id of [MASK] in `tokens`: one past the codebook."""
        return self.tokenizer.codebook_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        """Row of the class embedding used without a label (unconditional / dropped / MAGE's fake class)."""
        return self.config.num_classes

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.tokenizer.grid_size)

    @property
    def num_tokens(self) -> int:
        h, w = self.grid_size
        return h * w

    # ------------------------------------------------------------------ batches
    def batch_tokens(self, tokens: torch.Tensor | None, images: torch.Tensor | None) -> torch.Tensor:
        """Codes from a token cache (N, h, w), or images (N, C, H, W) in [0, 1] through the frozen
        tokenizer -> (N, L) int64."""
        if tokens is None:
            if images is None:
                raise ValueError("a token model needs a batch with 'tokens' (a token cache) or 'images'")
            with torch.no_grad():
                tokens = self.tokenizer.encode(images)
        if tuple(tokens.shape[1:]) != self.grid_size:
            raise ValueError(f"tokens of grid {tuple(tokens.shape[1:])} do not match the tokenizer's grid "
                             f"{self.grid_size}; was the token cache made with another tokenizer?")
        return tokens.flatten(1).long()

    def class_rows(self, labels: torch.Tensor | None, n: int, device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """labels (N,) (NO_LABEL = none) or None -> (N,) rows of the class embedding. Unconditional
        models always use the null row; in training, labels drop to it with p = label_dropout
        (drawn with `generator`, or the global RNG)."""
        null = torch.full((n,), self.null_class, dtype=torch.long, device=device)
        if labels is None or self.num_classes == 0:
            return null
        labels = labels.to(device=device, dtype=torch.long)
        if ((labels < NO_LABEL) | (labels >= self.num_classes)).any():
            bad = labels[(labels < NO_LABEL) | (labels >= self.num_classes)][0].item()
            raise ValueError(f"label {bad} is outside 0..{self.num_classes - 1} (or {NO_LABEL} for none)")
        rows = torch.where(labels == NO_LABEL, null, labels)
        if self.training and self.config.label_dropout > 0:
            rows = torch.where(uniform_noise((n,), device, generator) < self.config.label_dropout, null, rows)
        return rows

    def masked_token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple:
        """logits (M, V) and targets (M,) at the masked positions -> (label-smoothed cross-entropy,
        top-1 accuracy)."""
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, accuracy.detach()

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) codes -> images (N, C, H, W) in [0, 1] through the tokenizer."""
        return self.tokenizer.decode(tokens.view(len(tokens), *self.grid_size))
