"""The data section of a run configuration."""
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class DataConfig:
    """Where images come from and how a training batch is augmented.

    name: "fashion-mnist", "digits", or a path to an image folder (class sub-folders optional),
          a .npy/.npz array file, an IDX (MNIST-format) image file (.gz allowed), or a token cache
          folder written by `mimkit tokenize` (for MaskGIT / MAGE; its cached views replace the
          image augmentation).
    root: folder holding the Fashion-MNIST IDX files (default: Debian's /usr/share/datasets/fashion-mnist).
    split: "train" or "test": the built-ins' splits, a folder's train/ or val/ (test/) sub-folder, an
           .npz's train_*/test_* arrays, an HF DatasetDict's split (see mimkit.data.splits); a source
           without splits is all train data and has no test split.
    image_size: side in pixels of the images a model is fed.
    crop_scale / hflip / augment: RandomResizedCrop(scale) + horizontal flip. Decoded sources (image
           folders, tar shards, HF rows) draw the crop on the original, full-resolution image in the
           data workers and resize only the crop (the papers' recipe, mimkit.data.image_views); their
           evaluation reads resize the shorter side to S / 0.875 and centre crop S. In-memory sources
           (built-ins, arrays) are resized first and cropped in batches on the training device.
    crop_ratio: aspect-ratio range (width / height) of the RandomResizedCrop boxes.
    on_error: "raise" (stop naming the file) or "skip" (skip unreadable images and count them).
    max_image_pixels: image files with more pixels are refused before decoding (decompression bombs).
    min_image_size: image files with a shorter side are refused (0 = one patch of the model, when training).
    limit: use a seeded random subset of `limit` images, stratified by class when labelled (0 = all).
    limit_seed: the seed of that subset.
    convert_channels: convert images whose colour does not fit model.in_chans (colour -> grey by
           luminance, grey -> colour by repetition) instead of refusing them (mimkit.data.colour).
    num_workers: DataLoader workers for decoded-on-the-fly sources (folders, shards, HF rows); they
           live across epochs and read 4 batches each ahead; items travel as uint8 and become float
           on the training device (mimkit.data.device_batch).
    views: 1, or 2 for two views of every image (MAGE-C): two independent augmentations
           ("images", "images_2") or two different cached views ("tokens", "tokens_2").
    """

    name: str = "fashion-mnist"
    root: str = ""
    split: str = "train"
    image_size: int = 28
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    augment: bool = True
    on_error: str = "raise"
    limit: int = 0
    num_workers: int = 0
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    views: int = 1
    max_image_pixels: int = 50_000_000
    min_image_size: int = 0
    limit_seed: int = 0
    convert_channels: bool = False

    def validate(self, prefix: str = "data") -> None:
        if not self.name:
            raise ConfigError(f"{prefix}.name is empty; give fashion-mnist, digits, "
                              "or a folder / .npy / .npz / IDX path")
        if self.split not in ("train", "test"):
            raise ConfigError(f"{prefix}.split must be train or test, got {self.split!r}")
        if self.image_size <= 0:
            raise ConfigError(f"{prefix}.image_size must be positive, got {self.image_size}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"{prefix}.crop_scale must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ConfigError(f"{prefix}.crop_ratio must satisfy 0 < min <= max, got {list(self.crop_ratio)}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"{prefix}.on_error must be raise or skip, got {self.on_error!r}")
        if self.views not in (1, 2):
            raise ConfigError(f"{prefix}.views must be 1 or 2, got {self.views}")
        if self.max_image_pixels < 1:
            raise ConfigError(f"{prefix}.max_image_pixels must be >= 1, got {self.max_image_pixels}")
        for name in ("limit", "num_workers", "min_image_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(self, name)}")
