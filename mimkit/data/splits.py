"""Which part of a data source a split names.

- the built-ins (fashion-mnist, digits) have a train and a test split;
- a folder holding `train/` and `test/` (or `val/`, `validation/`) sub-folders is split by them;
- an .npz holding `train_images` / `test_images` (or `x_train` / `x_test`, `train_x` / `test_x`)
  arrays, with optional `*_labels` / `y_*` beside them, is split by them;
- a Hugging Face DatasetDict folder by its splits (test: `test`, else `validation`);
- any other source (a plain folder, .npy, .npz without split keys, IDX file, tar shards, token
  cache) is one undivided set: its train split is all of it and it has no test split, so asking
  for one raises MissingSplit - mimkit never evaluates on the images it trains on.
"""
from pathlib import Path

from ..errors import DataError

SPLITS = ("train", "test")
TEST_NAMES = ("test", "val", "validation")  # a test split under any of these names, in this order


class MissingSplit(DataError):
    """A test split was asked of a source that holds one undivided set of images."""


def check_split_name(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; splits are train and test")


def split_subfolders(root: str | Path) -> dict[str, Path] | None:
    """{"train": root/train, "test": root/test (or val, validation)} when `root` holds both, else None."""
    root = Path(root)
    train = root / "train"
    test = next((root / name for name in TEST_NAMES if (root / name).is_dir()), None)
    if not train.is_dir() or test is None:
        return None
    return {"train": train, "test": test}


def split_array_keys(keys: list[str], split: str) -> tuple[str | None, str | None]:
    """(images key, labels key or None) of `split` among an .npz's keys; (None, None) when absent."""
    names = ("train",) if split == "train" else TEST_NAMES
    for name in names:
        image_key = next((k for k in (f"{name}_images", f"x_{name}", f"{name}_x") if k in keys), None)
        if image_key is not None:
            label_key = next((k for k in (f"{name}_labels", f"y_{name}", f"{name}_y") if k in keys), None)
            return image_key, label_key
    return None, None


def has_split_arrays(keys: list[str]) -> bool:
    """Whether an .npz's keys hold a train split (and so are read split by split)."""
    return split_array_keys(keys, "train")[0] is not None


def missing_split(source: str) -> MissingSplit:
    """The error for a test split asked of the undivided `source`."""
    return MissingSplit(f"{source} is one set of images with no separate test split; mimkit never evaluates on "
                        "the images it trains on: give test data of its own (--test-data PATH), or use a folder "
                        "with train/ and val/ (or test/) sub-folders, or an .npz with train_images/test_images "
                        "(or x_train/x_test) arrays")
