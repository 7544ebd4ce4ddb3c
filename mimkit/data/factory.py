"""build_dataset: a DataConfig -> the dataset it names (built-in, folder, array or IDX file, tar
shards, Hugging Face datasets folder)."""
from pathlib import Path

from ..errors import DataError
from ..tokenizers.cache import MANIFEST_FILE, TokenCacheDataset
from .arrays import load_array_file
from .builtins import DIGITS_CLASSES, FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist
from .config import DataConfig
from .folder import ImageFolder
from .hf_datasets import PREFIX as HF_PREFIX
from .hf_datasets import HFImageRows, load_hf_rows
from .idx import has_idx_header, load_idx_images
from .memory import InMemoryDataset
from .shards import TarShards, expand_shards

BUILTINS = ("fashion-mnist", "digits")
CHOICES = ("fashion-mnist, digits, or a path to an image folder, a .npy/.npz file, an IDX file (.gz allowed), "
           "tar shards (shards-{000..009}.tar, a .tar file or a folder of .tar files) or hf:SAVE_TO_DISK_FOLDER")


def build_dataset(cfg: DataConfig, channels: int, split: str | None = None, min_side: int = 1):
    """The dataset of `cfg.name` with items {"images": float32 (channels, S, S), "labels": int64 0-d},
    or for a token cache folder a TokenCacheDataset with items {"tokens": (h, w), "labels"}.

    split: "train" / "test" for the built-ins (default cfg.split); ignored for paths.
    cfg.limit keeps the first `limit` images. Errors name the valid choices.
    min_side: shortest image side an image folder accepts when cfg.min_image_size is 0 (training
    passes the model's patch size).
    """
    cfg.validate("data")
    split = split or cfg.split
    name = cfg.name
    classes = None
    if name == "fashion-mnist":
        images, labels = load_fashion_mnist(cfg.root, split)
        classes = FASHION_MNIST_CLASSES
    elif name == "digits":
        images, labels = load_digits(split)
        classes = DIGITS_CLASSES
    else:
        if name.startswith(HF_PREFIX):  # a Hugging Face datasets folder (save_to_disk)
            return HFImageRows(load_hf_rows(name, split), channels, cfg.image_size, source=name)
        path = Path(name).expanduser()
        shards = expand_shards(name)  # a brace pattern, a .tar file or a folder of .tar shards
        if shards:
            return TarShards(shards, channels, cfg.image_size, on_error=cfg.on_error,
                             max_pixels=cfg.max_image_pixels, min_side=cfg.min_image_size or min_side)
        if (path / MANIFEST_FILE).is_file():
            return TokenCacheDataset(path, pairs=cfg.views == 2)
        if path.is_dir():
            return ImageFolder(path, channels, cfg.image_size, cfg.on_error, cfg.limit, cfg.max_image_pixels,
                               cfg.min_image_size or min_side)
        if not path.is_file():
            raise DataError(f"data.name {name!r} is neither a built-in dataset nor an existing path; "
                            f"choose {CHOICES}")
        if path.suffix.lower() in (".npy", ".npz"):
            images, labels = load_array_file(path)
        elif has_idx_header(path):
            images, labels = load_idx_images(path)
        else:
            raise DataError(f"data.name {name!r}: cannot tell what the file holds (not .npy/.npz, no IDX header); "
                            f"choose {CHOICES}")
    if cfg.limit:  # copies, so the full arrays can be freed
        images = images[: cfg.limit].clone()
        labels = labels[: cfg.limit].clone() if labels is not None else None
    return InMemoryDataset(images, labels, cfg.image_size, channels, classes, source=name)
