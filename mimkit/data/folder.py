"""A folder of image files, decoded on the fly: with class sub-folders or flat (unlabelled)."""
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .collate import SkippedItem
from .decode import MAX_PIXELS, decode_image, decode_random_crop
from .subset import subset_indices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm")


def scan_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted; hidden files/folders (".x", "._x") ignored."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [Path(folder) / n for n in names
                  if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A generator seed for the random crops of item `index` in `epoch` of a run seeded `seed`."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xC2B2AE3D27D4EB4F + index) % 2**63


class ImageFolder(Dataset):
    """Images under `root`, recursively.

    Labels: when every image lies inside a sub-folder of `root`, the first-level sub-folder is
    the class (classes sorted by name, labels 0..K-1); when any image sits directly in `root`,
    the folder is unlabelled and every label is -1 (pretraining needs no labels).
    classes: class names to number the sub-folders by instead (e.g. the train split's, so a test
    folder's labels mean the same classes); a sub-folder not among them is a DataError.
    Items: {"images": float32 (channels, image_size, image_size) in [0, 1], "labels": int64 0-d}.
    on_error: "raise" -> DataError naming an unreadable file; "skip" -> the item is a SkippedItem,
    which collate_skipping drops and ResumableLoader counts.
    limit: keep a seeded random subset of `limit` files (stratified by class, see
    mimkit.data.subset; 0 = all), drawn with `limit_seed`.
    max_pixels / min_side: size limits checked before decoding (see mimkit.data.decode); files
    outside them count as unreadable.
    augment: the training augmentation on the original image (mimkit.data.decode.decode_random_crop:
    a RandomResizedCrop box with `crop_scale` / `crop_ratio` drawn on the full-resolution image,
    only the crop resized, then a horizontal flip when `hflip`); `augments_itself` is then True
    and the Trainer's batched augmentation leaves these images alone. views=2 adds "images_2",
    a second independent draw (MAGE-C). Without augment (evaluation, pictures, statistics) an
    item is the centred square resized to image_size, as before.
    Randomness: the crops of item i in epoch e come from a generator seeded with (seed, e, i)
    (`seed` and `set_epoch` are set by the loader), so they do not depend on workers, ranks or
    where a run was resumed.
    """

    def __init__(self, root: str | os.PathLike, channels: int, image_size: int, on_error: str = "raise",
                 limit: int = 0, max_pixels: int = MAX_PIXELS, min_side: int = 1, classes: list[str] | None = None,
                 limit_seed: int = 0, augment: bool = False, crop_scale: tuple[float, float] = (0.2, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True, views: int = 1):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be raise or skip, got {on_error!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")
        files = scan_images(self.root)
        if not files:
            raise DataError(f"image folder {self.root} holds no images (looked recursively for "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        parts = [f.relative_to(self.root).parts for f in files]
        if all(len(p) > 1 for p in parts):
            self.classes = list(classes) if classes is not None else sorted({p[0] for p in parts})
            index = {name: i for i, name in enumerate(self.classes)}
            unknown = sorted({p[0] for p in parts} - set(index))
            if unknown:
                raise DataError(f"image folder {self.root}: class folder {unknown[0]!r} is not one of the train "
                                f"classes ({', '.join(self.classes[:10])}{', ...' if len(self.classes) > 10 else ''}); "
                                "a model cannot be tested on a class it was never shown")
            labels = torch.tensor([index[p[0]] for p in parts], dtype=torch.long)
        else:
            self.classes = None
            labels = torch.full((len(files),), -1, dtype=torch.long)
        self.total = len(files)
        keep = subset_indices(labels, len(files), limit, limit_seed)
        self.files, self.labels = [str(files[i]) for i in keep], labels[keep]
        self.channels, self.image_size, self.on_error = channels, image_size, on_error
        self.max_pixels, self.min_side = max_pixels, min_side
        self.source = str(self.root)
        self.augment, self.crop_scale, self.crop_ratio = augment, tuple(crop_scale), tuple(crop_ratio)
        self.hflip, self.views = hflip, views
        self.seed, self.epoch = 0, 0  # of the crops (see the class docstring)
        self.skipped: dict[str, None] = {}  # unreadable files met by readers in this process (ordered set)

    @property
    def augments_itself(self) -> bool:
        """True when items are already augmented (the Trainer must not crop or flip them again)."""
        return self.augment

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops the next items are (the loader calls it before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | SkippedItem:
        path = self.files[index]
        try:
            if not self.augment:
                image = decode_image(path, self.channels, self.image_size, self.max_pixels, self.min_side)
            else:
                generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                views = [decode_random_crop(path, self.channels, self.image_size, self.crop_scale, self.crop_ratio,
                                            self.hflip, generator, self.max_pixels, self.min_side)
                         for _ in range(self.views)]
        except DataError:
            raise
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            if self.on_error == "skip":
                return SkippedItem(path)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"cannot read image {path}: {reason}; fix or delete it, or skip unreadable files "
                            "(data.on_error=skip when training, --on-error skip for other commands)") from None
        if self.augment:
            item = {"images": views[0], "labels": self.labels[index].clone()}
            if self.views == 2:
                item["images_2"] = views[1]
            return item
        return {"images": image, "labels": self.labels[index].clone()}
