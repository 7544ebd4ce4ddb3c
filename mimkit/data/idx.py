"""IDX files (the MNIST format), plain or gzipped.

Layout: two zero bytes, a dtype code, the number of dims n, n big-endian uint32 sizes, then the
values in C order, big-endian. An image file `<p>-images-idx3-ubyte[.gz]` takes its labels from
`<p>-labels-idx1-ubyte[.gz]` when that file exists.
"""
import gzip
import os
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import images_to_tensor, labels_to_tensor

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None


def is_idx(data: bytes) -> bool:
    """Whether `data` starts with a plausible IDX header."""
    return len(data) >= 4 and data[:2] == b"\0\0" and data[2] in IDX_DTYPES and data[3] > 0


def has_idx_header(path: str | os.PathLike) -> bool:
    """Whether the file (gunzipped if needed) starts with an IDX header; reads only that."""
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as f:
            return is_idx(f.read(4))
    except (OSError, EOFError, zlib.error):
        return False


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """IDX bytes -> an array of the header's shape and dtype; `source` names the file in errors."""
    if not is_idx(data):
        raise DataError(f"{source} is not an IDX file (bad magic {data[:4].hex() or 'empty'}); "
                        "expected 00 00 <dtype> <ndim>")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{source} is {state}: {len(data)} bytes, expected {expected} for shape {shape}; "
                        "re-download or re-extract it")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (.gz or plain) -> numpy array of its shape and dtype (native byte order)."""
    return parse_idx(read_bytes(str(path)), str(path))


def labels_path_for(images_path: str | os.PathLike) -> Path | None:
    """The labels file next to an IDX images file (images -> labels, idx3 -> idx1, .gz optional)."""
    path = Path(images_path)
    name = re.sub(r"\.gz$", "", path.name)
    if "images" not in name:
        return None
    stem = name.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (path.with_name(stem), path.with_name(stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_idx_images(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IDX images (+ the matching labels file, if any) -> (uint8 (N, C, H, W), int64 (N,) | None)."""
    images = images_to_tensor(read_idx(path), str(path))
    labels_file = labels_path_for(path)
    if labels_file is None:
        return images, None
    return images, labels_to_tensor(read_idx(labels_file), len(images), str(labels_file))
