"""The data section of a run configuration."""
from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where images come from and how a training batch is augmented.

    name: "fashion-mnist", "digits", or a path to an image folder (class sub-folders optional),
          a .npy/.npz array file, or an IDX (MNIST-format) image file (.gz allowed).
    root: folder holding the Fashion-MNIST IDX files (default: Debian's /usr/share/datasets/fashion-mnist).
    split: "train" or "test" for the built-ins; ignored for paths.
    image_size: side in pixels every image is resized to before augmentation.
    crop_scale / hflip / augment: RandomResizedCrop(scale) + horizontal flip, batched on tensors.
    on_error: "raise" (stop naming the file) or "skip" (skip unreadable images and count them).
    limit: use only the first `limit` images (0 = all).
    num_workers: DataLoader workers for decoded-on-the-fly sources (folders).
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
