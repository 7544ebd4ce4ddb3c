"""What image folders, tar shards and HF rows share: items of uint8 views, seeded crops, eval views.

A dataset built on `ImageItems` serves {"images": uint8 (C, S, S), "labels": int64 0-d} (plus
"images_2" when views == 2); consumers make them float with mimkit.data.device_batch. With
`augment` the item is the training view(s) of mimkit.data.image_views, drawn from a generator seeded
by (seed, epoch, index) - `item_seed` - so the crops depend neither on workers, ranks nor where a
run was resumed; without it (evaluation, pictures, statistics) the evaluation view.

Keys: a map-style dataset takes `index` (the epoch is `self.epoch`, set by set_epoch) or
`(epoch, index)` - the loader sends the latter, so workers that live across epochs need no
set_epoch of their own.
"""
import torch
from PIL import Image

from .decode import MAX_PIXELS, open_checked, pillow_limit
from .image_views import CropRecipe, image_views


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A generator seed for the random crops of item `index` in `epoch` of a run seeded `seed`."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xC2B2AE3D27D4EB4F + index) % 2**63


def split_key(key, epoch: int) -> tuple[int, int]:
    """A dataset key -> (epoch, index): `(epoch, index)` as given, a plain index in `epoch`."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return epoch, int(key)


class ImageItems:
    """Mixin: decoded images -> uint8 items (see the module docstring). Call `init_items` in __init__."""

    epoch_keys = True  # the loader may send (epoch, index) keys

    def init_items(self, channels: int, image_size: int, augment: bool = False, recipe: CropRecipe = CropRecipe(),
                   views: int = 1, max_pixels: int = MAX_PIXELS, min_side: int = 1) -> None:
        self.channels, self.image_size, self.augment, self.recipe, self.views = (channels, image_size, augment,
                                                                                 recipe, views)
        self.max_pixels, self.min_side = max_pixels, min_side
        self.seed, self.epoch = 0, 0  # of the crops: the loader sets both

    @property
    def augments_itself(self) -> bool:
        """True when items are already augmented (the Trainer must not crop or flip them again)."""
        return self.augment

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops plain-index items are (the loaders call it before each epoch)."""
        self.epoch = epoch

    def item_views(self, source, name: str, epoch: int, index: int) -> dict[str, torch.Tensor]:
        """{"images"(, "images_2")}: the views of one image. source: a path or file object (checked
        against max_pixels / min_side before decoding) or a PIL image. Raises what PIL raises for an
        unreadable image, UnusableImage, or DataError (impossible channel conversion)."""
        recipe, views = (self.recipe, self.views) if self.augment else (None, 1)
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, index)) if self.augment else None
        if isinstance(source, Image.Image):
            out = image_views(source, self.channels, self.image_size, recipe, views, generator, name=name)
        else:
            with pillow_limit(self.max_pixels), open_checked(source, self.max_pixels, self.min_side) as img:
                out = image_views(img, self.channels, self.image_size, recipe, views, generator, name=name)
        return {"images": out[0], **({"images_2": out[1]} if len(out) == 2 else {})}
