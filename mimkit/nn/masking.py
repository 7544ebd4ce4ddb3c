"""Random masking of a token sequence (MAE): keep a random subset, remember how to undo it."""
from dataclasses import dataclass

import torch


@dataclass
class MaskedSequence:
    """The result of `random_masking`.

    kept:        (N, K, D) the kept tokens, in the order of ids_keep
    mask:        (N, L) float, 1 where a token is hidden, 0 where kept (original order)
    ids_keep:    (N, K) int64 indices of the kept tokens
    ids_restore: (N, L) int64; gathering [kept; hidden] with it restores the original order
    """

    kept: torch.Tensor
    mask: torch.Tensor
    ids_keep: torch.Tensor
    ids_restore: torch.Tensor


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, L, D), (N, K) int64 -> (N, K, D); the index is broadcast as a view, never materialised."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def random_masking(x: torch.Tensor, ratio: float, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> MaskedSequence:
    """Hide int(L * ratio) tokens of each sample uniformly at random.

    x: (N, L, D). noise: optional (N, L) uniform noise (small = kept), for reproducible masks;
    otherwise drawn with `generator` (or the global RNG). Keeps the first int(L * (1 - ratio))
    of argsort(noise), as in the MAE paper's code.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    n, length, _ = x.shape
    keep = int(length * (1 - ratio))
    if noise is None:
        noise = torch.rand(n, length, device=x.device, generator=generator)
    elif noise.shape != (n, length):
        raise ValueError(f"noise must have shape {(n, length)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = (ids_restore >= keep).to(x.dtype)
    return MaskedSequence(gather_tokens(x, ids_keep), mask, ids_keep, ids_restore)


def restore_order(h: torch.Tensor, fill: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Undo `random_masking` after an encoder: [cls; kept] (N, 1+K, D) -> [cls; L tokens in the
    original order] (N, 1+L, D), with `fill` (any shape that broadcasts to (1, 1, D), e.g. a mask
    token) at the L - K hidden positions; ids_restore (N, L) as random_masking returned it."""
    n, length = ids_restore.shape
    hidden = fill.expand(n, length + 1 - h.shape[1], -1)
    order = torch.cat([ids_restore.new_zeros(n, 1), ids_restore + 1], dim=1)  # (N, 1+L): cls stays first
    return gather_tokens(torch.cat([h, hidden], dim=1), order)


def uniform_noise(size: tuple[int, ...], device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) noise of `size` on `device`. With `generator` it is drawn on the generator's own
    device and moved (so a CPU generator fixes masks on any device, as BEiT v2's block masking);
    without one it is exactly `torch.rand(size, device=device)` from the global RNG."""
    if generator is None:
        return torch.rand(size, device=device)
    return torch.rand(size, device=generator.device, generator=generator).to(device)
