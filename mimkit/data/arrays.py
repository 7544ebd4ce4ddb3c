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
from .splits import has_split_arrays, split_array_keys

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


def array_file_is_split(path: str | os.PathLike) -> bool:
    """Whether an .npz holds train / test arrays (see mimkit.data.splits); False for .npy."""
    if str(path).lower().endswith(".npy"):
        return False
    try:
        with np.load(str(path), allow_pickle=False) as loaded:
            return has_split_arrays(list(loaded.files))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read array file {path}: {err}") from None


def load_array_file(path: str | os.PathLike, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """.npy (images only) or .npz -> (uint8 (N, C, H, W), int64 (N,) | None).

    An .npz holds images under 'images' or 'x' and optional labels under 'labels' or 'y'; with
    `split` ("train" / "test") it holds that split's arrays instead (train_images / test_images,
    x_train / x_test, ...; see mimkit.data.splits).
    """
    path = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read array file {path}: {err}") from None
    if isinstance(loaded, np.ndarray):
        return images_to_tensor(loaded, path), None
    with loaded:
        keys = list(loaded.files)
        if split is None:
            image_key = next((k for k in IMAGE_KEYS if k in keys), None)
            label_key = next((k for k in LABEL_KEYS if k in keys), None)
        else:
            image_key, label_key = split_array_keys(keys, split)
        if image_key is None:
            wanted = "'images' or 'x'" if split is None else f"{split}_images or x_{split}"
            raise DataError(f"{path}: no images array; expected key {wanted}, found {keys}")
        try:
            images = images_to_tensor(loaded[image_key], f"{path}[{image_key}]")
            labels = None if label_key is None else labels_to_tensor(
                loaded[label_key], len(images), f"{path}[{label_key}]")
        except (ValueError, zipfile.BadZipFile) as err:  # e.g. object arrays need pickle
            raise DataError(f"cannot read array file {path}: {err}") from None
    return images, labels
