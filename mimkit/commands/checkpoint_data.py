"""What every command that reads a checkpoint and a dataset shares: its arguments, turned into the
library's EvalSources (mimkit.data.evaluation_data), and the lines it prints about the data."""


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


def eval_sources(args):
    """The EvalSources the data options of a command name (options a command lacks keep their defaults)."""
    from ..data.evaluation_data import EvalSources

    return EvalSources(data=getattr(args, "data", None), train_data=getattr(args, "train_data", None),
                       test_data=getattr(args, "test_data", None), root=getattr(args, "data_root", "") or "",
                       limit=getattr(args, "limit", 0), seed=getattr(args, "seed", 0),
                       on_error=getattr(args, "on_error", None),
                       convert_channels=getattr(args, "convert_channels", False))


def load_eval_data(args, config, split: str):
    """The `split` dataset a command reads (mimkit.data.evaluation_data.eval_dataset)."""
    from ..data.evaluation_data import eval_dataset

    return eval_dataset(config, split, eval_sources(args))


def load_labelled_splits(args, config, what: str):
    """(train, test) for a command that needs labels, printing what each split holds."""
    from ..data.evaluation_data import labelled_eval_splits
    from ..data.summary import describe_dataset

    train, test = labelled_eval_splits(config, eval_sources(args), what)
    print(f"train data   {describe_dataset(train, args.seed)}")
    print(f"test data    {describe_dataset(test, args.seed)}", flush=True)
    return train, test


def report_skipped(*datasets) -> None:
    """Print how many distinct unreadable files the datasets skipped (--on-error skip), and the first."""
    from ..data.evaluation_data import skipped_files

    skipped = skipped_files(*datasets)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image file(s) (--on-error skip), e.g. {skipped[0]}")
