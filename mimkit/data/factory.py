"""build_dataset: a DataConfig -> the dataset it names (built-in, folder, array or IDX file, tar
shards, Hugging Face datasets folder), cut to the split asked for (see mimkit.data.splits)."""
import os
from pathlib import Path

from ..errors import ConfigError, DataError
from ..tokenizers.cache import MANIFEST_FILE, TokenCacheDataset
from .arrays import array_file_is_split, load_array_file
from .builtins import DIGITS_CLASSES, FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist
from .colour import check_channels, kinds_of_files, kinds_of_images
from .config import DataConfig
from .folder import ImageFolder
from .hf_datasets import PREFIX as HF_PREFIX
from .hf_datasets import HFImageRows, load_hf_rows
from .idx import has_idx_header, load_idx_images
from .image_views import CropRecipe
from .memory import InMemoryDataset
from .shards import TarShards, expand_shards
from .splits import check_split_name, missing_split, split_subfolders
from .subset import subset_indices

BUILTINS = ("fashion-mnist", "digits")
CHOICES = ("fashion-mnist, digits, or a path to an image folder, a .npy/.npz file, an IDX file (.gz allowed), "
           "tar shards (shards-{000..009}.tar, a .tar file or a folder of .tar files) or hf:SAVE_TO_DISK_FOLDER")


def build_dataset(cfg: DataConfig, channels: int, split: str | None = None, min_side: int = 1,
                  whole: bool = False, classes: list[str] | None = None, key: str = "data.name",
                  training: bool = False):
    """The dataset of `cfg.name` with items {"images": (channels, S, S), "labels": int64 0-d} - float32
    in [0, 1] from in-memory sources, uint8 from decoded ones (folders, shards, HF rows: make them
    float with mimkit.data.device_batch.to_device_float) -
    or for a token cache folder a TokenCacheDataset with items {"tokens": (h, w), "labels"}.

    split: "train" / "test" (default cfg.split). A source with splits (built-ins, a folder with
    train/ and val/ sub-folders, an .npz with train_*/test_* arrays, an HF DatasetDict) gives that
    split; an undivided source gives all of its images for "train" and raises MissingSplit for
    "test", unless `whole` (a source named explicitly as the test data is used whole).
    classes: class names that number a class folder's labels (a test folder numbered like its train folder).
    key: how errors name the source (data.name, or a command's option such as --test-data).
    cfg.limit keeps a seeded random subset (stratified by class; seed cfg.limit_seed).
    min_side: shortest image side an image folder accepts when cfg.min_image_size is 0 (training
    passes the model's patch size). Every dataset gets `source`, the text that names it in reports,
    `split`: the split it is of a divided source (None for an undivided one), and `identity`: the
    resolved source path and split, which tells whether two datasets are the same data.
    training: the dataset a run trains on; with cfg.augment a decoded source (image folder, tar
    shards, HF rows) then augments its items itself on the original images (mimkit.data.image_items;
    the Trainer does not crop them again). Otherwise they serve the evaluation view (resize the
    shorter side to S / 0.875, centre crop S).
    """
    if not cfg.name:
        raise ConfigError(f"{key} is empty; give fashion-mnist, digits, or a folder / .npy / .npz / IDX path")
    split = split or cfg.split
    dataset = _build(cfg, channels, split, min_side, whole, classes, key, training)
    if not hasattr(dataset, "split"):
        dataset.split = None
    path = Path(cfg.name).expanduser()
    dataset.identity = (os.path.realpath(path) if path.exists() else cfg.name, dataset.split)
    return dataset


def _build(cfg: DataConfig, channels: int, split: str, min_side: int, whole: bool, classes: list[str] | None,
           key: str, training: bool = False):
    """build_dataset without the `split` mark of undivided sources."""
    cfg.validate("data")
    check_split_name(split)
    name = cfg.name
    if name in BUILTINS:
        images, labels = load_fashion_mnist(cfg.root, split) if name == "fashion-mnist" else load_digits(split)
        return marked(in_memory(cfg, channels, images, labels, FASHION_MNIST_CLASSES if name == "fashion-mnist"
                                else DIGITS_CLASSES, f"{name} {split}"), split)
    if name.startswith(HF_PREFIX):  # a Hugging Face datasets folder (save_to_disk)
        rows, source = load_hf_rows(name, split, whole)
        if cfg.limit:
            rows = rows.select(subset_indices(None, len(rows), cfg.limit, cfg.limit_seed).tolist())
        return marked(HFImageRows(rows, channels, cfg.image_size, source=source, augment=training and cfg.augment,
                                  recipe=recipe(cfg), views=cfg.views), split if source != name else None)
    path = Path(name).expanduser()
    shards = expand_shards(name)  # a brace pattern, a .tar file or a folder of .tar shards
    streamed = shards or (path / MANIFEST_FILE).is_file()
    if streamed and split == "test" and not whole:
        raise missing_split(name)
    if streamed and cfg.limit:
        raise ConfigError(f"data.limit does not apply to {name} (tar shards and token caches are read whole); "
                          "set data.limit=0 or make a smaller source")
    if shards:
        return TarShards(shards, channels, cfg.image_size, on_error=cfg.on_error, max_pixels=cfg.max_image_pixels,
                         min_side=cfg.min_image_size or min_side, augment=training and cfg.augment,
                         recipe=recipe(cfg), views=cfg.views)
    if (path / MANIFEST_FILE).is_file():
        return TokenCacheDataset(path, pairs=cfg.views == 2)
    if path.is_dir():
        return image_folder(cfg, channels, path, split, min_side, whole, classes, training)
    if not path.is_file():
        raise DataError(f"{key} {name!r} is neither a built-in dataset nor an existing path; choose {CHOICES}")
    if path.suffix.lower() in (".npy", ".npz"):
        if array_file_is_split(path):
            images, labels = load_array_file(path, split)
            return marked(in_memory(cfg, channels, images, labels, None, f"{name} {split}"), split)
        images, labels = load_array_file(path)
    elif has_idx_header(path):
        images, labels = load_idx_images(path)
    else:
        raise DataError(f"{key} {name!r}: cannot tell what the file holds (not .npy/.npz, no IDX header); "
                        f"choose {CHOICES}")
    if split == "test" and not whole:
        raise missing_split(name)
    return in_memory(cfg, channels, images, labels, None, name)


def image_folder(cfg: DataConfig, channels: int, path: Path, split: str, min_side: int, whole: bool,
                 classes: list[str] | None, training: bool = False) -> ImageFolder:
    """A folder's `split`: its train/ or val/ (test/) sub-folder when it has both, else all of it."""
    parts = split_subfolders(path)
    if parts is None and split == "test" and not whole:
        raise missing_split(str(path))
    if parts is not None and classes is None and split == "test":  # number test classes like train's
        classes = ImageFolder(parts["train"], channels, cfg.image_size).classes
    folder = ImageFolder(parts[split] if parts else path, channels, cfg.image_size, cfg.on_error, cfg.limit,
                         cfg.max_image_pixels, cfg.min_image_size or min_side, classes=classes,
                         limit_seed=cfg.limit_seed, augment=training and cfg.augment, crop_scale=cfg.crop_scale,
                         crop_ratio=cfg.crop_ratio, hflip=cfg.hflip, views=cfg.views)
    check_channels(kinds_of_files(folder.files), channels, folder.source, cfg.convert_channels)
    return marked(folder, split if parts else None)


def recipe(cfg: DataConfig) -> CropRecipe:
    """The training crops data.crop_scale / crop_ratio / hflip ask for."""
    return CropRecipe(tuple(cfg.crop_scale), tuple(cfg.crop_ratio), cfg.hflip)


def marked(dataset, split: str | None):
    """`dataset` with `split` set: the split of a divided source it holds (None: undivided)."""
    dataset.split = split
    return dataset


def in_memory(cfg: DataConfig, channels: int, images, labels, classes, source: str) -> InMemoryDataset:
    """An InMemoryDataset of the arrays, cut to a seeded subset when cfg.limit is set."""
    check_channels(kinds_of_images(images), channels, source, cfg.convert_channels)
    total = len(images)
    if cfg.limit and cfg.limit < total:  # copies, so the full arrays can be freed
        keep = subset_indices(labels, total, cfg.limit, cfg.limit_seed)
        images = images[keep].clone()
        labels = labels[keep].clone() if labels is not None else None
    dataset = InMemoryDataset(images, labels, cfg.image_size, channels, classes, source=source)
    dataset.total = total
    return dataset
