"""Frozen features of a whole labelled dataset: the input of the linear and k-NN probes.

The model is only asked for `features(images, pool) -> (N, D)`; it runs in eval mode under
no_grad and every submodule's train/eval flag is restored afterwards.
"""
import math

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.collate import collate_skipping, note_skipped
from ..data.device_batch import to_device_float
from ..errors import DataError
from ..nn.device import model_device


def labelled_batches(dataset, batch_size: int, num_workers: int = 0, device=None):
    """Yield {"images": float (B, C, H, W) in [0, 1], "labels": (B,)} batches in dataset order, on
    `device` (None: the CPU; uint8 items become float there, mimkit.data.device_batch).

    In-memory datasets with `get_batch(indices)` are sliced directly (no per-item collation);
    any other map-style dataset of {"images", "labels"} dicts goes through a DataLoader. Items an
    on_error="skip" dataset could not read are left out and noted in `dataset.skipped`.
    """
    if hasattr(dataset, "get_batch"):
        n = len(dataset)
        for start in range(0, n, batch_size):
            yield to_device_float(dataset.get_batch(torch.arange(start, min(start + batch_size, n))), device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skipping, pin_memory=device is not None and torch.device(device).type == "cuda")
    for batch, skipped in loader:
        note_skipped(dataset, skipped)
        if batch is not None:
            yield to_device_float(batch, device)


def _check_batch(batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict) or "images" not in batch:
        raise DataError(f"{what} must yield dicts with 'images' and 'labels'; got {type(batch).__name__}")
    labels = batch.get("labels")
    if labels is None:
        raise DataError(f"{what} has no 'labels'; the probes need a labelled train and test split "
                        f"(an unlabelled folder can be pretrained on but not probed)")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"{what} labels must be integer class ids, got dtype {labels.dtype}")
    return batch["images"], labels.reshape(-1).long()


def extract_features(model: nn.Module, dataset, batch_size: int = 512, device=None, pool: str = "cls",
                     progress: bool = True, num_workers: int = 0,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model.features(images, pool)` over a labelled dataset, in dataset order.

    Args:
        model: nn.Module with `features(images (B, C, H, W) in [0, 1], pool) -> (B, D)`.
        dataset: items {"images": (C, H, W) float [0, 1], "labels": int64 0-d}; `get_batch`
            is used when present, else a DataLoader.
        batch_size: images per forward pass.
        device: where the model runs; default the model's own device. The model is NOT moved:
            pass a device only when the model already lives there.
        pool: "cls" or "mean" (passed through to `model.features`).
        progress: show a tqdm bar over batches.
        num_workers: DataLoader workers (ignored for `get_batch` datasets).

    Returns:
        feats: (N, D) float32 on CPU; labels: (N,) int64 on CPU.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not hasattr(model, "features"):
        raise TypeError(f"{type(model).__name__} has no features(images, pool) method; it cannot be probed")
    device = model_device(model) if device is None else torch.device(device)
    try:
        total = math.ceil(len(dataset) / batch_size)
    except TypeError:
        total = None
    if total == 0:
        raise DataError("the dataset to probe is empty")

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    feats, labels = [], []
    try:
        with torch.no_grad():
            batches = labelled_batches(dataset, batch_size, num_workers, device)
            for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
                images, y = _check_batch(batch, "the dataset to probe")
                f = model.features(images.to(device, non_blocking=True), pool=pool)
                if f.ndim != 2 or f.shape[0] != images.shape[0]:
                    raise ValueError(f"{type(model).__name__}.features returned shape {tuple(f.shape)}; "
                                     f"expected ({images.shape[0]}, D) for a batch of {images.shape[0]}")
                feats.append(f.float().cpu())
                labels.append(y.cpu())
    finally:
        for module, training in flags:
            module.training = training
    if not feats:
        raise DataError("the dataset to probe is empty")
    return torch.cat(feats), torch.cat(labels)


def extract_split_features(model: nn.Module, train_set, test_set, *, pool: str = "cls", batch_size: int = 512,
                           device=None, progress: bool = True):
    """`extract_features` of a train and a test split -> ((train feats, labels), (test feats, labels))."""
    return tuple(extract_features(model, data, batch_size, device, pool, progress, desc=f"{split} features ({pool})")
                 for split, data in (("train", train_set), ("test", test_set)))


def dataset_tensors(dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of a labelled dataset, in dataset order: ((N, C, H, W), (N,))."""
    images, labels = zip(*((b["images"], b["labels"]) for b in labelled_batches(dataset, batch_size)))
    return torch.cat(images), torch.cat(labels)
