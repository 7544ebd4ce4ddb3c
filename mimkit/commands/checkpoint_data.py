"""What every command that reads a checkpoint and a dataset shares: its arguments and the data."""
import json
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError


def add_checkpoint_data_args(p) -> None:
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses its latest checkpoint) or model.safetensors")
    p.add_argument("--data", help="dataset: fashion-mnist, digits or a path (default: the run's own data; for a run "
                                  "trained on a token cache, the images that cache was made from)")
    p.add_argument("--data-root", default="", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split (0 = all)")
    p.add_argument("--seed", type=int, default=0)


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


def load_eval_data(args, config, split: str):
    """The dataset a command reads: --data (default: the run's images) at the model's size, un-augmented."""
    from ..data import build_dataset
    from ..data.config import DataConfig

    base = config.data if args.data is None else replace(DataConfig(), name=args.data)
    size, channels = image_geometry(config)
    data_cfg = replace(base, name=image_source(base.name), split=split, augment=False, limit=args.limit,
                       image_size=size, root=args.data_root or base.root, views=1)
    return build_dataset(data_cfg, channels=channels, split=split)
