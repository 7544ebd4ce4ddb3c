"""`mimkit reconstruct CKPT --out grid.png`: masked input | reconstruction | original."""
from .checkpoint_data import add_checkpoint_data_args, load_eval_data


def run(args) -> None:
    import torch

    from ..engine.checkpoint import load_model
    from ..pictures import reconstruction_grid, save_grid

    model, config = load_model(args.checkpoint)
    data = load_eval_data(args, config, args.split)
    n = min(args.n, len(data))
    g = torch.Generator().manual_seed(args.seed)
    indices = torch.randperm(len(data), generator=g)[:n]
    images = torch.stack([data[int(i)]["images"] for i in indices])
    picture = reconstruction_grid(model, images, seed=args.seed, mask_ratio=args.mask_ratio, scale=args.scale)
    path = save_grid(picture, args.out)
    print(f"wrote {path} ({n} rows: masked | reconstruction | original)")


def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="draw masked input | reconstruction | original",
                       description="Write a PNG: one row per test image, columns masked input | reconstruction "
                                   "(visible patches pasted back) | original.")
    add_checkpoint_data_args(p)
    p.add_argument("--split", default="test", help="train or test (default test)")
    p.add_argument("--n", type=int, default=8, help="number of images (rows)")
    p.add_argument("--mask-ratio", type=float, default=None, help="override the model's mask ratio")
    p.add_argument("--scale", type=int, default=4, help="pixel enlargement factor for small images")
    p.add_argument("--out", required=True, help="output PNG path")
    p.set_defaults(func=run)
