"""Hugging Face `datasets` as an image source (only when the `datasets` package is installed).

    data.name=hf:/path/saved/with/save_to_disk        (Dataset.save_to_disk folder; a DatasetDict
    data.name=hf:/path/saved/with/save_to_disk:train   takes its split after the last colon)

Nothing is downloaded: only folders on disk are read (datasets.load_from_disk). Rows are dicts
with a PIL image under "image" or "img" (the names HF image datasets use) and an optional integer
"label" / "labels"; each row becomes a uint8 item exactly as an image file of a folder does
(mimkit.data.image_items: training crops on the original seeded by (seed, epoch, row), or the
evaluation view).
"""
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .image_items import ImageItems, split_key
from .image_views import CropRecipe

PREFIX = "hf:"
IMAGE_KEYS = ("image", "img", "pixel_values")
LABEL_KEYS = ("label", "labels", "fine_label")


def parse_hf_name(name: str) -> tuple[Path, str | None]:
    """'hf:PATH[:SPLIT]' -> (PATH, SPLIT or None)."""
    spec = name[len(PREFIX):]
    path, _, split = spec.rpartition(":")
    if path and not Path(spec).expanduser().exists():
        return Path(path).expanduser(), split
    return Path(spec).expanduser(), None


def load_hf_rows(name: str, split: str, whole: bool = False):
    """(rows, source text) of a save_to_disk folder: a DatasetDict's `split` (the test split is
    `test`, else `validation`), the split named after the last colon, or a plain Dataset, which is
    one undivided set (MissingSplit for the test split unless `whole`)."""
    from .splits import TEST_NAMES, missing_split

    try:
        import datasets
    except ImportError:
        raise DataError(f"data.name={name} needs the Hugging Face `datasets` package, which is not installed; "
                        "pip install datasets, or export the images to a folder or tar shards") from None
    path, chosen = parse_hf_name(name)
    if not path.is_dir():
        raise DataError(f"data.name={name}: {path} is not a folder written by Dataset.save_to_disk "
                        "(downloads by dataset name are not available: save the dataset to disk first)")
    if chosen and split == "test" and not whole:  # the name picks one split: that is all of the data
        raise missing_split(name)
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = [chosen] if chosen else ["train"] if split == "train" else list(TEST_NAMES)
        found = next((n for n in names if n in loaded), None)
        if found is None:
            raise DataError(f"data.name={name}: no split {' or '.join(names)}; splits: {', '.join(loaded)}")
        return loaded[found], f"{name} {found}" if not chosen else name
    if split == "test" and not whole:
        raise missing_split(name)
    return loaded, name


class HFImageRows(ImageItems, Dataset):
    """Map-style view of HF rows: items {"images": uint8 (channels, S, S), "labels": int64 0-d}
    (plus "images_2" when views == 2); keys: a row index or (epoch, row index)."""

    def __init__(self, rows, channels: int, image_size: int, source: str = "hf dataset", augment: bool = False,
                 recipe: CropRecipe = CropRecipe(), views: int = 1):
        if len(rows) == 0:
            raise DataError(f"{source} has no rows")
        first = rows[0]
        self.image_key = next((k for k in IMAGE_KEYS if k in first), None)
        if self.image_key is None:
            raise DataError(f"{source}: rows have no image column (looked for {', '.join(IMAGE_KEYS)}; "
                            f"found {', '.join(first)})")
        self.label_key = next((k for k in LABEL_KEYS if k in first), None)
        self.rows, self.source = rows, source
        self.init_items(channels, image_size, augment, recipe, views)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        epoch, index = split_key(key, self.epoch)
        row = self.rows[index]
        image = row[self.image_key]
        if not isinstance(image, Image.Image):
            raise DataError(f"{self.source}[{index}].{self.image_key} is a {type(image).__name__}, not a PIL image; "
                            "cast the column to datasets.Image() before save_to_disk")
        item = self.item_views(image, f"{self.source}[{index}]", epoch, index)
        label = int(row[self.label_key]) if self.label_key is not None else -1
        item["labels"] = torch.tensor(label, dtype=torch.long)
        return item
