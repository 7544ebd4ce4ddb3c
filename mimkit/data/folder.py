"""A folder of image files, decoded on the fly: with class sub-folders or flat (unlabelled)."""
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .collate import SkippedItem
from .decode import MAX_PIXELS
from .image_items import ImageItems, split_key
from .image_views import CropRecipe
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


class ImageFolder(ImageItems, Dataset):
    """Images under `root`, recursively.

    Labels: when every image lies inside a sub-folder of `root`, the first-level sub-folder is
    the class (classes sorted by name, labels 0..K-1); when any image sits directly in `root`,
    the folder is unlabelled and every label is -1 (pretraining needs no labels).
    classes: class names to number the sub-folders by instead (e.g. the train split's, so a test
    folder's labels mean the same classes); a sub-folder not among them is a DataError.
    Items: {"images": uint8 (channels, image_size, image_size), "labels": int64 0-d} (float in [0, 1]
    through mimkit.data.device_batch.to_device_float).
    on_error: "raise" -> DataError naming an unreadable file; "skip" -> the item is a SkippedItem,
    which collate_skipping drops and ResumableLoader counts.
    limit: keep a seeded random subset of `limit` files (stratified by class, see
    mimkit.data.subset; 0 = all), drawn with `limit_seed`.
    max_pixels / min_side: size limits checked before decoding (see mimkit.data.decode); files
    outside them count as unreadable.
    augment: the training augmentation on the original image (mimkit.data.image_views: a
    RandomResizedCrop box with `crop_scale` / `crop_ratio` drawn on the full-resolution image, only
    the crop resized, then a horizontal flip when `hflip`); `augments_itself` is then True and the
    Trainer's batched augmentation leaves these images alone. views=2 adds "images_2", a second
    independent draw (MAGE-C). Without augment (evaluation, pictures, statistics) an item is the
    evaluation view: resize the shorter side to S / 0.875, centre crop S.
    Randomness: the crops of item i in epoch e come from a generator seeded with (seed, e, i)
    (mimkit.data.image_items), so they do not depend on workers, ranks or where a run was resumed.
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
        self.on_error = on_error
        self.init_items(channels, image_size, augment, CropRecipe(tuple(crop_scale), tuple(crop_ratio), hflip),
                        views, max_pixels, min_side)
        self.source = str(self.root)
        self.skipped: dict[str, None] = {}  # unreadable files met by readers in this process (ordered set)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict[str, torch.Tensor] | SkippedItem:
        """key: an index, or (epoch, index) (mimkit.data.image_items)."""
        epoch, index = split_key(key, self.epoch)
        path = self.files[index]
        try:
            item = self.item_views(path, path, epoch, index)
        except DataError:
            raise
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            if self.on_error == "skip":
                return SkippedItem(path)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"cannot read image {path}: {reason}; fix or delete it, or skip unreadable files "
                            "(data.on_error=skip when training, --on-error skip for other commands)") from None
        item["labels"] = self.labels[index].clone()
        return item
