"""What the pipelines need from a model (a "masked token model", e.g. MaskGIT or MAGE), and the
checks of what a user passes to it (labels).

    model.codebook_size: int          V, token ids 0..V-1
    model.mask_token_id: int          id of the unknown positions of a canvas
    model.num_classes: int            0 for an unconditional model
    model.grid_size: (h, w)           L = h * w tokens
    model.tokenizer                   encode(images (N, C, H, W) in [0, 1]) -> (N, h, w) int64,
                                      decode(codes (N, h, w)) -> images (N, C, H, W) in [0, 1]
    model.token_logits(tokens (N, L) int64, labels (N,) int64 | None) -> (N, L, V)
        labels None = unconditional for all rows; a label -1 = no label for that row.
"""
from collections.abc import Sequence

import torch

from ..errors import ConfigError

TOKEN_MODEL_ATTRIBUTES = ("codebook_size", "mask_token_id", "num_classes", "grid_size", "tokenizer", "token_logits")


def check_token_model(model) -> None:
    """ConfigError naming the first missing attribute when `model` is no masked token model."""
    missing = [name for name in TOKEN_MODEL_ATTRIBUTES if not hasattr(model, name)]
    if missing:
        raise ConfigError(f"{type(model).__name__} is not a masked token model (it has no {missing[0]!r}); "
                          f"generation needs a MaskGIT or MAGE model")


def resolve_labels(model, labels: int | Sequence[int] | torch.Tensor | None,
                   n: int | None) -> tuple[torch.Tensor | None, int]:
    """User labels -> ((n,) int64 tensor or None, n).

    labels: None (unconditional), one class for every sample, or one per sample (-1 = no label for
    that sample). n: the number of samples, or None to take len(labels). A label outside
    [-1, num_classes) or any label for an unconditional model is a ConfigError.
    """
    if labels is None:
        if n is None or n < 1:
            raise ConfigError(f"the number of samples must be a positive integer, got {n!r}")
        return None, n
    if model.num_classes == 0:
        raise ConfigError("this model is unconditional (num_classes 0): it takes no labels; drop them")
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ConfigError(f"labels must be integers, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1).cpu()
    if tensor.numel() == 1 and n is not None:
        tensor = tensor.expand(n).clone()
    if n is None:
        n = tensor.numel()
    if tensor.numel() != n or n < 1:
        raise ConfigError(f"got {tensor.numel()} labels for {n} samples; pass one label or one per sample")
    bad = tensor[(tensor < -1) | (tensor >= model.num_classes)]
    if bad.numel():
        raise ConfigError(f"label {int(bad[0])} is out of range: this model has classes 0..{model.num_classes - 1} "
                          f"(-1 = no label)")
    return tensor, n
