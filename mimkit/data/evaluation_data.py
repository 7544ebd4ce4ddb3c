"""The data a command or a script evaluates a trained model on: the train and test splits named
by `EvalSources` (a source with both splits, or each split's own source), at the model's image
size and channels, un-augmented, never the same images for both.

    sources = EvalSources(test_data="my_images/test", limit=1000)
    train, test = labelled_eval_splits(run_config, sources, "the probes")

The CLI's --data / --train-data / --test-data / --limit / --seed / --on-error / --convert-channels
/ --data-root options fill an EvalSources (mimkit/commands/checkpoint_data.py).
"""
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .collate import SkippedItem, note_skipped
from .config import DataConfig
from .device_batch import to_device_float
from .factory import build_dataset
from .labels import check_class_coverage, require_labels


@dataclass
class EvalSources:
    """Where evaluation images come from (None: the run's own data) and how they are read.

    data: a source with train and test splits, or the train data; train_data / test_data: each
    split's own source (that source whole, or its own split if it has one); root: the folder of
    the Fashion-MNIST IDX files; limit / seed: a seeded subset of each split, stratified by class;
    on_error: unreadable files ("raise" / "skip"; None: the run's setting for its own data, else
    raise); convert_channels: convert colour <-> grey instead of refusing a mismatch.
    """

    data: str | None = None
    train_data: str | None = None
    test_data: str | None = None
    root: str = ""
    limit: int = 0
    seed: int = 0
    on_error: str | None = None
    convert_channels: bool = False


def image_geometry(config) -> tuple[int, int]:
    """(side, channels) of the images a run's model takes; a token model's are its tokenizer's."""
    from ..nn import to_pair

    model = config.model
    if hasattr(model, "img_size"):
        return to_pair(model.img_size)[0], model.in_chans
    tokenizer = (getattr(model, "tokenizer_config", None) or {}).get("model", {})
    if "img_size" in tokenizer:
        return to_pair(tokenizer["img_size"])[0], int(tokenizer.get("in_chans", 3))
    raise ConfigError(f"cannot tell the image size of this {config.method} model: its config names no img_size")


def image_source(data_name: str) -> str:
    """The run's data name, or for a token cache the dataset its manifest says it was made from."""
    manifest = Path(data_name).expanduser() / "manifest.json"
    if not manifest.is_file():
        return data_name
    try:
        source = str(json.loads(manifest.read_text()).get("source") or "")
    except (OSError, ValueError):
        source = ""
    name = source.rsplit(":", 1)[0] if source.endswith((":train", ":test")) else source
    if not name:
        raise ConfigError(f"the run's data {data_name} is a token cache that does not name its images; pass --data")
    return name


def split_source(config, split: str, sources: EvalSources) -> tuple[DataConfig, bool]:
    """(the DataConfig of `split`'s source, whether that source was named for this split alone)."""
    named = sources.train_data if split == "train" else sources.test_data
    if named is not None:
        if not named.strip():
            raise ConfigError(f"--{split}-data is empty; give a dataset name or path")
        return replace(DataConfig(), name=named), True
    return (config.data, False) if sources.data is None else (replace(DataConfig(), name=sources.data), False)


def eval_dataset(config, split: str, sources: EvalSources, classes: list[str] | None = None):
    """The `split` ("train" / "test") dataset of a run config's model: that split's own source
    whole (or its own split), else that split of `sources.data` (default: the run's images). A
    source without a test split is refused (mimkit.data.splits). classes: the train data's class
    names, to number a test folder's classes alike."""
    base, named = split_source(config, split, sources)
    key = f"--{split}-data" if named else "--data" if sources.data is not None else "data.name"
    size, channels = image_geometry(config)
    own = base is config.data
    data_cfg = replace(base, name=image_source(base.name), split=split, augment=False, limit=sources.limit,
                       limit_seed=sources.seed, image_size=size, views=1, root=sources.root or base.root,
                       on_error=sources.on_error or (base.on_error if own else "raise"),
                       convert_channels=sources.convert_channels or (own and base.convert_channels))
    return build_dataset(data_cfg, channels=channels, split=split, whole=named, classes=classes, key=key)


def eval_splits(config, sources: EvalSources):
    """(train, test) datasets to train something on one and test it on the other; DataError when
    they hold the same images."""
    train = eval_dataset(config, "train", sources)
    test = eval_dataset(config, "test", sources, classes=getattr(train, "classes", None))
    check_disjoint(train, test)
    return train, test


def labelled_eval_splits(config, sources: EvalSources, what: str):
    """eval_splits for work that needs labels (`what`, e.g. "the probes"): refused before any work
    when unlabelled or when the classes do not fit (fewer than 2, or test classes train lacks)."""
    train, test = eval_splits(config, sources)
    train_labels, test_labels = require_labels(train, "train", what), require_labels(test, "test", what)
    check_class_coverage(train_labels, test_labels, train.source, test.source)
    return train, test


def check_disjoint(train, test) -> None:
    """DataError when the test data is (or shares image files with) the train data, however the
    paths were written (relative, with '..', through a symlink)."""
    files = {os.path.realpath(f) for f in getattr(train, "files", ())}
    shared = [f for f in getattr(test, "files", ()) if os.path.realpath(f) in files]
    if shared:
        raise DataError(f"{len(shared)} of the {len(test)} test images are also train images (e.g. {shared[0]}); "
                        "give test data that is not part of the train data")
    identity = getattr(train, "identity", None)
    if not files and identity is not None and identity == getattr(test, "identity", None):
        raise DataError(f"the train and the test data are both {train.source}; give test data of its own "
                        "(--test-data PATH)")


def skipped_files(*datasets) -> list[str]:
    """The distinct unreadable files the datasets skipped (on_error="skip"), in the order met."""
    return list(dict.fromkeys(path for d in datasets for path in getattr(d, "skipped", ())))


def random_readable_items(data, n: int, seed: int) -> list[dict]:
    """Up to n items of a seeded random draw from `data` (images float in [0, 1]), passing over files
    an on_error="skip" dataset could not read (noted in data.skipped); DataError when none is readable."""
    items = []
    for i in torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist():
        item = data[i]
        if isinstance(item, SkippedItem):
            note_skipped(data, [item.path])
            continue
        items.append(to_device_float(item))
        if len(items) == n:
            break
    if not items:
        raise DataError(f"no image of {getattr(data, 'source', 'the data')} could be read; check the data")
    return items
