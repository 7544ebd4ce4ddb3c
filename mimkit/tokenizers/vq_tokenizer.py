"""What the VQ tokenizers (VQGAN, VQ-KD) share: the quantizer's config fields and the encode path.

A VQ tokenizer shifts images from [0, 1] to [-1, 1], maps them through its encoder to a (h, w) grid
of code_dim vectors (`vectors`, the subclass's) and replaces each by the nearest code of `quantize`
(mimkit.nn.VectorQuantizer). `VQTokenizer` owns the Tokenizer protocol of cache.py on top of that:

    codes = model.encode(images)   # (N, C, H, W) in [0, 1] -> (N, h, w) int64 in [0, codebook_size)
    model.codebook_size, model.grid_size, model.fingerprint()

plus the quantizer built from the config, the decode of codes through the subclass's
`decode_vectors`, the logs of a training forward (the quantizer's perplexity, usage, restarted,
commitment) and the frozen networks kept outside the module tree (`external`).

A subclass sets `config_class` and `code_path` (the state-dict key prefixes of the weights that decide
the codes: the fingerprint hashes exactly those), builds its modules (assigning
`self.quantize = self.build_quantizer()` where its module order puts it: that order decides the
random init) and defines check_images, vectors, decode_vectors and fingerprint_tag.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..methods.base import Method
from ..nn.vector_quantizer import QuantizerOutput, VectorQuantizer
from .fingerprint import state_fingerprint

# The quantizer's bookkeeping buffers: counters, not weights (codes do not depend on them).
QUANTIZER_BOOKKEEPING = ("quantize.initialized", "quantize.steps", "quantize.last_hit", "quantize.last_reset")


@dataclass
class VQConfig:
    """Input and quantizer fields of a VQ tokenizer (defaults: taming's VQGAN; VQKDConfig overrides some).

    img_size x img_size images with in_chans channels. Quantizer: codebook_size codes of code_dim;
    beta = commitment weight; EMA decay ema_decay (when the codebook is learned by EMA); kmeans_init
    (kmeans_iters Lloyd iterations) on the first training batch; restart_after: re-seed codes unused
    for that many training steps (0 = never); usage_window: training steps the logged usage counts.
    How codes are looked up and learned: `l2_codes` (cosine lookup) and `codebook_update`
    ("gradient" or "ema"), fields of VQGANConfig, fixed by VQKDConfig (class attributes here).
    """

    img_size: int = 256
    in_chans: int = 3
    codebook_size: int = 1024
    code_dim: int = 256
    beta: float = 0.25
    ema_decay: float = 0.99
    kmeans_init: bool = False
    kmeans_iters: int = 10
    restart_after: int = 0
    usage_window: int = 100

    # not fields (no annotation): a subclass makes them fields or fixes them
    l2_codes = False
    codebook_update = "gradient"

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the code grid of an img_size image."""
        raise NotImplementedError

    def check_minimum(self, prefix: str, minimum: int, names: tuple[str, ...]) -> None:
        """ConfigError for the first field in `names` below `minimum`."""
        for name in names:
            if getattr(self, name) < minimum:
                raise ConfigError(f"{prefix}.{name} must be >= {minimum}, got {getattr(self, name)}")

    def validate(self, prefix: str = "model") -> None:
        """The input and quantizer fields (a subclass checks its own, then calls this)."""
        self.check_minimum(prefix, 1, ("in_chans", "codebook_size", "code_dim", "kmeans_iters", "usage_window"))
        self.check_minimum(prefix, 0, ("beta", "restart_after"))
        if self.codebook_update not in ("gradient", "ema"):
            raise ConfigError(f"{prefix}.codebook_update must be gradient or ema, got {self.codebook_update!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{prefix}.ema_decay must be in [0, 1), got {self.ema_decay}")


def vq_logs(q: QuantizerOutput, logs: dict | None = None, **scalars: torch.Tensor) -> dict:
    """The logs of a training forward: `logs` (the loss's own, first), the quantizer's stats
    (perplexity, usage, restarted, commitment), then `scalars` detached."""
    out = dict(logs or {})
    out.update(q.stats)
    out.update({name: value.detach() for name, value in scalars.items()})
    return out


class VQTokenizer(Method):
    """Base of the VQ tokenizers: encode, codebook_size, grid_size, fingerprint (see the module docstring)."""

    config_class = VQConfig
    is_tokenizer = True
    code_path: tuple[str, ...] = ()  # state-dict key prefixes of the weights that decide the codes

    def __init__(self, config: VQConfig):
        super().__init__()
        config.validate()
        self.config = config
        # frozen helper networks (VQGAN's perceptual network, VQ-KD's teacher) live outside the module
        # tree: not in state_dict / checkpoints, never moved by .to() / .train()
        self.external: dict[str, nn.Module] = {}

    def build_quantizer(self) -> VectorQuantizer:
        """The config's VectorQuantizer over code_dim vectors (no projections)."""
        c = self.config
        return VectorQuantizer(c.code_dim, c.codebook_size, l2_normalize=c.l2_codes, beta=c.beta,
                               update=c.codebook_update, decay=c.ema_decay, kmeans_init=c.kmeans_init,
                               kmeans_iters=c.kmeans_iters, restart_after=c.restart_after,
                               usage_window=c.usage_window)

    # ------------------------------------------------------------------ properties
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.config.grid_size

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimizer must not decay (the Trainer's param_groups reads this)."""
        return {"quantize.embedding.weight"}

    # ------------------------------------------------------------------ the subclass's stages
    def check_images(self, images: torch.Tensor) -> None:
        """ValueError unless `images` is a batch this tokenizer encodes."""
        raise NotImplementedError

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] -> pre-quantisation vectors (N, h, w, code_dim)."""
        raise NotImplementedError

    def decode_vectors(self, quantized: torch.Tensor):
        """quantised vectors (N, h, w, code_dim) -> what the decoder makes of them."""
        raise NotImplementedError

    def fingerprint_tag(self) -> str:
        """The architecture facts of the fingerprint's header that the hashed tensors do not show."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared stages
    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> pre-quantisation vectors (N, h, w, code_dim)."""
        self.check_images(images)
        return self.vectors(images * 2 - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> codes (N, h, w) int64 in [0, codebook_size)."""
        return self.quantize.encode(self.encode_features(images))

    def decode_codes(self, codes: torch.Tensor):
        """codes (N, h, w) int64 -> decode_vectors of the codes' vectors."""
        return self.decode_vectors(self.quantize.decode(codes))

    def fingerprint(self) -> str:
        """sha256 (mimkit.tokenizers.fingerprint.state_fingerprint) over the header
        "<class qualname>:<fingerprint_tag()>" and every state-dict tensor under `code_path`."""
        return state_fingerprint(f"{type(self).__qualname__}:{self.fingerprint_tag()}", self.state_dict(),
                                 lambda key: key.startswith(self.code_path))
