"""Checks shared by the probes: features are (N, D) floats, labels (N,) non-negative class ids;
and the chunk size of the blockwise similarity / distance computations (k-NN, precision-recall)."""
import torch

# Elements of one (chunk, N) similarity or distance block when no chunk size is given (~64 MB in float32).
BLOCK_BUDGET = 1 << 24


def check_features(feats: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    """Raise ValueError naming `split` unless feats is (N, D) float with N > 0 and labels is (N,)
    integer and non-negative."""
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"{split} features must be a float tensor (N, D), got {shape}")
    if len(feats) == 0:
        raise ValueError(f"{split} features are empty")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(feats),):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{split} labels must be a tensor ({len(feats)},) matching the features, got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{split} labels must be integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"{split} labels must be non-negative class ids, found {labels.min().item()}")


def infer_num_classes(num_classes: int | None, *labels: torch.Tensor) -> int:
    """num_classes if given (checked against the labels), else max label + 1 over all `labels`."""
    seen = max(int(y.max()) for y in labels) + 1
    if num_classes is None:
        return seen
    if num_classes < seen:
        raise ValueError(f"num_classes={num_classes} but a label {seen - 1} is present")
    return num_classes


def chunk_rows(bank_rows: int, chunk_size: int | None = None) -> int:
    """Query rows per chunk when comparing them with a bank of `bank_rows` rows: chunk_size when
    given (ValueError unless positive), else the most (1 to 4096) that keep one (chunk, bank_rows)
    block within BLOCK_BUDGET elements."""
    if chunk_size is None:
        return max(1, min(4096, BLOCK_BUDGET // max(bank_rows, 1)))
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return chunk_size
