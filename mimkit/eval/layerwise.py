"""A linear probe per block: how linearly separable the classes are after each transformer block.

While `model.features(images, pool)` runs (unmasked, eval mode, no grad: mimkit.eval.features),
forward hooks on `model.blocks` capture every block's output and a pre-hook on blocks[0] its input
(the patch embedding + positions), so one pass per split yields all L + 1 representations. Each
is normed with the model's final `norm` (the LayerNorm features() applies after the last block)
and pooled like features(): the class position first ("cls"), or the mean of the other positions
("mean"; MAE's encode_unmasked keeps the patches in image order, and MaskGIT / MAGE put their
class token first too). So block L's features are exactly `features(images, pool)`. Then
mimkit.eval.linprobe.linear_probe runs on each block's features.

Rows: block 0 = the embedding output (input of the first block), block i = output of block i.
Needs `blocks` (an nn.ModuleList run once per features call on (N, 1 + L, D) tokens) and `norm`:
MAE, BEiT v2, MaskGIT, MAGE. RevColV2 (columns, no blocks) gives a MimkitError.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MimkitError
from ..nn import pool_tokens
from .comparison import ProbeProtocol
from .features import extract_features
from .linprobe import linear_probe


def check_layerwise_model(model: nn.Module) -> nn.ModuleList:
    """model.blocks, or MimkitError when the model has no block list and final norm to probe."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0 or not isinstance(getattr(model, "norm", None),
                                                                                    nn.Module):
        raise MimkitError(f"layer-wise probing needs a ViT with a `blocks` list and a final `norm`; "
                          f"{type(model).__name__} has none (probe its features with `mimkit eval linear`)")
    return blocks


def block_features(model: nn.Module, dataset, *, pool: str = "cls", batch_size: int = 512, device=None,
                   progress: bool = True, desc: str = "block features") -> tuple[torch.Tensor, torch.Tensor]:
    """Every block's pooled, normed output over a labelled dataset, in dataset order.

    Returns:
        feats: (L + 1, N, D) float32 on CPU, index 0 = embedding output, i = after block i;
        labels: (N,) int64.
    """
    blocks = check_layerwise_model(model)
    captured: list[list[torch.Tensor]] = [[] for _ in range(len(blocks) + 1)]

    def keep(index: int, hidden) -> None:
        if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
            raise MimkitError(f"block {index} of {type(model).__name__} gave {type(hidden).__name__} "
                              f"{tuple(getattr(hidden, 'shape', ()))}; layer-wise probing expects tokens (N, 1 + L, D)")
        captured[index].append(pool_tokens(model.norm(hidden), pool).float().cpu())

    handles = [blocks[0].register_forward_pre_hook(lambda module, args: keep(0, args[0]))]
    handles += [block.register_forward_hook(lambda module, args, out, i=i: keep(i + 1, out))
                for i, block in enumerate(blocks)]
    try:
        last, labels = extract_features(model, dataset, batch_size, device, pool, progress, desc=desc)
    finally:
        for handle in handles:
            handle.remove()
    feats = [torch.cat(chunks) if chunks else torch.zeros(0) for chunks in captured]
    if any(len(f) != len(labels) for f in feats):
        raise MimkitError(f"{type(model).__name__}.features did not run each block exactly once per image "
                          f"({[len(f) for f in feats]} outputs for {len(labels)} images); it cannot be probed "
                          f"layer by layer")
    return torch.stack(feats), labels


@dataclass
class LayerwiseRow:
    """Linear-probe top-1 (%) on one block's features."""

    block: int
    train_top1: float
    test_top1: float


def layerwise_probe(model: nn.Module, train_set, test_set, *, pool: str = "cls", batch_size: int = 512,
                    device=None, linear_kwargs: dict | None = None, progress: bool = True) -> list[LayerwiseRow]:
    """One `LayerwiseRow` per block 0..L (0 = embedding output); features of each split are
    extracted once for all blocks, then `linear_probe(**linear_kwargs)` runs per block."""
    train_feats, train_labels = block_features(model, train_set, pool=pool, batch_size=batch_size, device=device,
                                               progress=progress, desc=f"train block features ({pool})")
    test_feats, test_labels = block_features(model, test_set, pool=pool, batch_size=batch_size, device=device,
                                             progress=progress, desc=f"test block features ({pool})")
    rows, kwargs = [], {"progress": progress} | (linear_kwargs or {})
    for block, (train, test) in enumerate(zip(train_feats, test_feats)):
        result = linear_probe(train, train_labels, test, test_labels, **kwargs)
        rows.append(LayerwiseRow(block, result.train_top1, result.test_top1))
    return rows


class Layerwise(ProbeProtocol):
    """`layerwise_probe` as a protocol of `mimkit.eval.comparison`: one row per block 0..L, every
    block's features of each split extracted in one pass per pool; linear_kwargs go to
    `linear_probe` (the same recipe for both models)."""

    setting_column = "block"

    def __init__(self, *, batch_size: int = 512, device=None, linear_kwargs: dict | None = None,
                 progress: bool = True):
        self.batch_size, self.device, self.linear_kwargs, self.progress = batch_size, device, linear_kwargs, progress

    def check(self, model, method: str = "") -> None:
        check_layerwise_model(model)

    def run(self, model, train_set, test_set, pool: str) -> list[LayerwiseRow]:
        return layerwise_probe(model, train_set, test_set, pool=pool, batch_size=self.batch_size, device=self.device,
                               linear_kwargs=self.linear_kwargs, progress=self.progress)

    def setting(self, result: LayerwiseRow) -> int:
        return result.block

    def title(self, rows: list) -> str:
        return ("linear-probe test top-1 (%) per block (0 = patch embedding), normed with the final norm; "
                "pretrained vs the same architecture at random init")
