"""What every command that reads a checkpoint and a dataset shares: its arguments and the data."""
from dataclasses import replace


def add_checkpoint_data_args(p) -> None:
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses its latest checkpoint) or model.safetensors")
    p.add_argument("--data", help="dataset: fashion-mnist, digits or a path (default: the run's own data)")
    p.add_argument("--data-root", default="", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split (0 = all)")
    p.add_argument("--seed", type=int, default=0)


def load_eval_data(args, config, split: str):
    """The dataset a command reads: --data (default: the run's data) at the model's size, un-augmented."""
    from ..data import build_dataset
    from ..data.config import DataConfig
    from ..nn import to_pair

    base = config.data if args.data is None else replace(DataConfig(), name=args.data)
    data_cfg = replace(base, split=split, augment=False, limit=args.limit, image_size=to_pair(config.model.img_size)[0],
                       root=args.data_root or base.root)
    return build_dataset(data_cfg, channels=config.model.in_chans, split=split)
