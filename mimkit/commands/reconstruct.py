"""`mimkit reconstruct CKPT --out grid.png`: one row per image, the columns the model draws
(MAE: masked input | reconstruction | original; a tokenizer such as VQGAN: original | reconstruction)."""
from .checkpoint_data import add_checkpoint_data_args, load_eval_data


def run(args) -> None:
    import inspect

    import torch

    from ..engine.checkpoint import load_model
    from ..errors import MimkitError
    from ..pictures import image_grid, reconstruction_columns, save_grid

    model, config = load_model(args.checkpoint)
    if not hasattr(model, "reconstruct"):
        raise MimkitError(f"{config.method} models draw no reconstructions")
    data = load_eval_data(args, config, args.split)
    n = min(args.n, len(data))
    g = torch.Generator().manual_seed(args.seed)
    indices = torch.randperm(len(data), generator=g)[:n]
    images = torch.stack([data[int(i)]["images"] for i in indices])
    if args.mask_ratio is not None and "mask_ratio" not in inspect.signature(model.reconstruct).parameters:
        raise MimkitError(f"--mask-ratio does not apply to {config.method} (it masks nothing)")
    columns = reconstruction_columns(model, images, seed=args.seed, mask_ratio=args.mask_ratio)
    path = save_grid(image_grid(list(columns.values()), scale=args.scale), args.out)
    print(f"wrote {path} ({n} rows: {' | '.join(columns)})")


def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="draw reconstructions: masked | reconstruction | original (MAE), "
                                           "original | reconstruction (tokenizers)",
                       description="Write a PNG with one row per test image and the model's columns: masked input | "
                                   "reconstruction (visible patches pasted back) | original for MAE, original | "
                                   "decode(encode(image)) for a tokenizer such as VQGAN.")
    add_checkpoint_data_args(p)
    p.add_argument("--split", default="test", help="train or test (default test)")
    p.add_argument("--n", type=int, default=8, help="number of images (rows)")
    p.add_argument("--mask-ratio", type=float, default=None, help="MAE: override the model's mask ratio")
    p.add_argument("--scale", type=int, default=4, help="pixel enlargement factor for small images")
    p.add_argument("--out", required=True, help="output PNG path")
    p.set_defaults(func=run)
