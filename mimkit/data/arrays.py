"""Image arrays (numpy) -> uint8 (N, C, H, W) tensors; .npy / .npz files.

Layouts: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1..4 (the channel axis is the one of
size <= 4; both of size <= 4 is ambiguous). Values: uint8, any integer type within 0..255, or
floats in [0, 1] (rounded to uint8: 1/255 steps).
"""
import os
import zipfile

import numpy as np
import torch

from ..errors import DataError

IMAGE_KEYS = ("images", "x")
LABEL_KEYS = ("labels", "y")


def images_to_tensor(array: np.ndarray, source: str) -> torch.Tensor:
    """numpy images (see the module rule) -> uint8 (N, C, H, W); `source` names them in errors."""
    shape = tuple(array.shape)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        first, last = array.shape[1] <= 4, array.shape[3] <= 4
        if first == last:
            raise DataError(f"{source}: cannot tell the channel axis of images of shape {shape}; "
                            "save them as (N, H, W, C) or (N, C, H, W) with C <= 4")
        if last:
            array = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{source}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
                        f"got {shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if array.size == 0:
        raise DataError(f"{source}: holds no images (shape {shape})")
    lo, hi = array.min(), array.max()
    if np.issubdtype(array.dtype, np.integer) and 0 <= lo and hi <= 255:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))
    if np.issubdtype(array.dtype, np.floating) and 0 <= lo and hi <= 1:
        return torch.from_numpy(np.ascontiguousarray(np.rint(array * 255), dtype=np.uint8))
    raise DataError(f"{source}: {array.dtype} images with values in [{lo}, {hi}]; expected uint8 "
                    "(0..255) or floats in [0, 1] - rescale them before saving")


def labels_to_tensor(array: np.ndarray, count: int, source: str) -> torch.Tensor:
    """numpy labels -> int64 (N,); must be integers, one per image."""
    if array.ndim != 1 or len(array) != count or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{source}: labels must be {count} integers (one per image), "
                        f"got {array.dtype} of shape {tuple(array.shape)}")
    return torch.from_numpy(array.astype(np.int64))


def load_array_file(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """.npy (images only) or .npz (keys images|x and optionally labels|y) -> (uint8 (N, C, H, W), int64 (N,) | None)."""
    path = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read array file {path}: {err}") from None
    if isinstance(loaded, np.ndarray):
        return images_to_tensor(loaded, path), None
    with loaded:
        keys = list(loaded.files)
        image_key = next((k for k in IMAGE_KEYS if k in keys), None)
        if image_key is None:
            raise DataError(f"{path}: no images array; expected key 'images' or 'x', found {keys}")
        label_key = next((k for k in LABEL_KEYS if k in keys), None)
        try:
            images = images_to_tensor(loaded[image_key], f"{path}[{image_key}]")
            labels = None if label_key is None else labels_to_tensor(
                loaded[label_key], len(images), f"{path}[{label_key}]")
        except (ValueError, zipfile.BadZipFile) as err:  # e.g. object arrays need pickle
            raise DataError(f"cannot read array file {path}: {err}") from None
    return images, labels
