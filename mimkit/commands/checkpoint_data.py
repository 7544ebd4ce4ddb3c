"""What every command that reads a checkpoint and a dataset shares: its arguments and the data."""
import json
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError


def add_checkpoint_data_args(p) -> None:
    """The checkpoint, its evaluation data (--data / --train-data / --test-data), subset, error and thread options."""
    from .arguments import non_negative_int, seed_int, thread_count

    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses its latest checkpoint) or model.safetensors")
    g = p.add_argument_group("data (any source mimkit reads: fashion-mnist, digits, an image folder, .npy/.npz, "
                             "IDX file, tar shards, hf:FOLDER)")
    g.add_argument("--data", help="a source with train and test splits (built-ins, a folder with train/ and val/ "
                                  "sub-folders, an .npz with train_*/test_* arrays), or the train data (default: the "
                                  "run's own data; for a run trained on a token cache, the images it was made from)")
    g.add_argument("--train-data", help="the train split: this source whole, or its train split if it has one "
                                        "(default: --data's train split)")
    g.add_argument("--test-data", help="the test split: this source whole, or its test split if it has one "
                                       "(default: --data's test split; a source without one is refused, never "
                                       "evaluated on its own training images)")
    g.add_argument("--data-root", default="", help="folder of the Fashion-MNIST IDX files")
    g.add_argument("--limit", type=non_negative_int, default=0,
                   help="use a seeded random subset of N images of each split, stratified by class (0 = all)")
    g.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="unreadable image files: stop naming the file, or skip and count them "
                        "(default: the run's data.on_error for the run's own data, else raise)")
    g.add_argument("--convert-channels", action="store_true",
                   help="convert images whose colour does not fit the model (colour -> grey, grey -> RGB) instead "
                        "of refusing them")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the subset, masks and probes (default 0)")
    p.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch's default)")


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


def eval_data_config(args, config, split: str):
    """(the DataConfig of `split`'s source, whether that source was named for this split alone)."""
    from ..data.config import DataConfig

    named = getattr(args, f"{split}_data", None)
    if named is not None:
        if not named.strip():
            raise ConfigError(f"--{split}-data is empty; give a dataset name or path")
        return replace(DataConfig(), name=named), True
    data = getattr(args, "data", None)
    return (config.data, False) if data is None else (replace(DataConfig(), name=data), False)


def load_eval_data(args, config, split: str, classes: list[str] | None = None):
    """The `split` ("train" / "test") dataset a command reads, at the model's size, un-augmented:
    --train-data / --test-data (that source whole, or its own split), else that split of --data
    (default: the run's images). A source without a test split is refused (mimkit.data.splits).
    classes: the train data's class names, to number a test folder's classes alike."""
    from ..data import build_dataset

    base, named = eval_data_config(args, config, split)
    option = f"--{split}-data" if named else "--data" if getattr(args, "data", None) is not None else "data.name"
    size, channels = image_geometry(config)
    own = base is config.data
    data_cfg = replace(base, name=image_source(base.name), split=split, augment=False, limit=getattr(args, "limit", 0),
                       limit_seed=getattr(args, "seed", 0), image_size=size, views=1,
                       root=getattr(args, "data_root", "") or base.root,
                       on_error=getattr(args, "on_error", None) or (base.on_error if own else "raise"),
                       convert_channels=getattr(args, "convert_channels", False) or (own and base.convert_channels))
    return build_dataset(data_cfg, channels=channels, split=split, whole=named, classes=classes, key=option)


def load_eval_splits(args, config):
    """(train, test) datasets for a command that trains on one and tests on the other; DataError
    when they hold the same images."""
    train = load_eval_data(args, config, "train")
    test = load_eval_data(args, config, "test", classes=getattr(train, "classes", None))
    check_disjoint(train, test)
    return train, test


def check_disjoint(train, test) -> None:
    """DataError when the test data is (or shares image files with) the train data, however the
    paths were written (relative, with '..', through a symlink)."""
    import os

    from ..errors import DataError

    files = {os.path.realpath(f) for f in getattr(train, "files", ())}
    shared = [f for f in getattr(test, "files", ()) if os.path.realpath(f) in files]
    if shared:
        raise DataError(f"{len(shared)} of the {len(test)} test images are also train images (e.g. {shared[0]}); "
                        "give test data that is not part of the train data")
    identity = getattr(train, "identity", None)
    if not files and identity is not None and identity == getattr(test, "identity", None):
        raise DataError(f"the train and the test data are both {train.source}; give test data of its own "
                        "(--test-data PATH)")


def load_labelled_splits(args, config, what: str):
    """(train, test) for a command that needs labels (`what`, e.g. "the probes"): refused before any
    work when unlabelled or when the classes do not fit; prints what each split is."""
    from ..data.labels import check_class_coverage, require_labels
    from ..data.summary import describe_dataset

    train, test = load_eval_splits(args, config)
    train_labels, test_labels = require_labels(train, "train", what), require_labels(test, "test", what)
    check_class_coverage(train_labels, test_labels, train.source, test.source)
    seed = getattr(args, "seed", 0)
    print(f"train data   {describe_dataset(train, seed)}")
    print(f"test data    {describe_dataset(test, seed)}", flush=True)
    return train, test


def report_skipped(*datasets) -> None:
    """Print how many distinct unreadable files the datasets skipped (--on-error skip), and the first."""
    skipped = list(dict.fromkeys(path for d in datasets for path in getattr(d, "skipped", ())))
    if skipped:
        print(f"skipped {len(skipped)} unreadable image file(s) (--on-error skip), e.g. {skipped[0]}")


def random_readable_items(data, n: int, seed: int) -> list[dict]:
    """Up to n items of a seeded random draw from `data`, passing over files an on_error="skip"
    dataset could not read (noted in data.skipped); DataError when none is readable."""
    import torch

    from ..data.collate import SkippedItem, note_skipped
    from ..errors import DataError

    items = []
    for i in torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist():
        item = data[i]
        if isinstance(item, SkippedItem):
            note_skipped(data, [item.path])
            continue
        items.append(item)
        if len(items) == n:
            break
    if not items:
        raise DataError(f"no image of {getattr(data, 'source', 'the data')} could be read; check the data")
    return items
