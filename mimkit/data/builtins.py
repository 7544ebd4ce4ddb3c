"""Built-in datasets: scikit-learn's 8x8 digits and Fashion-MNIST from local IDX files."""
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import images_to_tensor, labels_to_tensor
from .idx import load_idx_images

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_PREFIX = {"train": "train", "test": "t10k"}
DIGITS_TEST_FRACTION = 0.2
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; the built-in datasets have train and test")


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (1797 8x8 images, values 0..16) -> (uint8 (N, 1, 8, 8), int64 (N,)).

    Values are scaled to 0..255. Deterministic split: the last 20% (360 images) are the test set.
    """
    check_split(split)
    from sklearn.datasets import load_digits as sklearn_digits  # slow import, only when asked

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    n_train = len(images) - round(len(images) * DIGITS_TEST_FRACTION)
    part = slice(0, n_train) if split == "train" else slice(n_train, None)
    return (images_to_tensor(images[part], "digits"),
            labels_to_tensor(bunch.target[part], len(images[part]), "digits"))


def find_idx_file(root: Path, name: str) -> Path | None:
    """root/name.gz or root/name, whichever exists."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(root: str | os.PathLike = "", split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST IDX files under `root` (default FASHION_MNIST_ROOT) -> (uint8 (N, 1, 28, 28), int64 (N,))."""
    check_split(split)
    root = Path(root or FASHION_MNIST_ROOT).expanduser()
    prefix = FASHION_MNIST_PREFIX[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    files = [find_idx_file(root, name) for name in names]
    if None in files:
        raise DataError(f"Fashion-MNIST {split} not found: looked for {names[0]}[.gz] and {names[1]}[.gz] in "
                        f"{root}; get them with `apt-get install dataset-fashion-mnist` or `make data`, "
                        "or set data.root=DIR to a folder holding them")
    return load_idx_images(files[0])  # finds the labels file next to it
