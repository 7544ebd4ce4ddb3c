"""Floor 5: datasets (built-ins, folders, arrays, IDX), batched augmentation, a resumable loader.

Images are (C, H, W) per item and (N, C, H, W) per batch: float32 in [0, 1] from in-memory
sources, uint8 from decoded ones (folders, shards, HF rows), which consumers turn into float [0, 1]
with `to_device_float` (mimkit.data.device_batch); items and batches are dicts {"images", "labels"}
with labels int64, -1 when unknown.
"""
from .arrays import images_to_tensor, load_array_file
from .augment import BatchAugment, build_augment
from .builtins import FASHION_MNIST_ROOT, load_digits, load_fashion_mnist
from .channels import to_channels
from .collate import SkippedItem, collate_skipping
from .config import DataConfig
from .decode import decode_image, pil_to_array
from .factory import build_dataset
from .folder import IMAGE_EXTENSIONS, ImageFolder
from .idx import load_idx_images, read_idx
from .loader import ResumableLoader
from .permutation import epoch_permutation
from .memory import InMemoryDataset
from .resize import fit_square

__all__ = ["images_to_tensor", "load_array_file", "BatchAugment", "build_augment", "FASHION_MNIST_ROOT",
           "load_digits", "load_fashion_mnist", "to_channels", "SkippedItem", "collate_skipping", "DataConfig",
           "decode_image", "pil_to_array", "build_dataset", "IMAGE_EXTENSIONS", "ImageFolder", "load_idx_images",
           "read_idx", "ResumableLoader", "epoch_permutation", "InMemoryDataset", "fit_square"]
