"""`mimkit reconstruct CKPT --out grid.png`: one row per image, the columns the model draws
(MAE: masked input | reconstruction | original; a tokenizer such as VQGAN: original | reconstruction)."""
from .arguments import picture_scale, positive_int, unit_interval
from .checkpoint_data import add_checkpoint_data_args, load_eval_data, report_skipped


def run(args) -> None:
    import inspect

    import torch

    from ..data.evaluation_data import random_readable_items
    from ..data.summary import describe_dataset
    from ..registry import load_model
    from ..errors import ConfigError, MimkitError
    from ..pictures import check_picture_path, image_grid, reconstruction_columns, save_grid

    check_picture_path(args.out)  # a bad --out fails before the model loads

    model, config = load_model(args.checkpoint)
    if not model.reconstructs_pixels:
        raise MimkitError(f"{config.method} models draw no reconstructions")
    if args.mask_ratio is not None:
        if "mask_ratio" not in inspect.signature(model.reconstruct).parameters:
            raise MimkitError(f"--mask-ratio does not apply to {config.method} (it masks nothing)")
        patches = getattr(getattr(model, "patch_embed", None), "num_patches", 0)
        if patches and int(patches * (1 - args.mask_ratio)) < 1:
            raise ConfigError(f"--mask-ratio {args.mask_ratio} hides all {patches} patches of an image; "
                              f"keep at least one (at most {1 - 1 / patches:.4f})")
    data = load_eval_data(args, config, args.split)
    print(f"{args.split} data   {describe_dataset(data, args.seed)}")
    images = torch.stack([item["images"] for item in random_readable_items(data, args.n, args.seed)])
    columns = reconstruction_columns(model, images, seed=args.seed, mask_ratio=args.mask_ratio)
    path = save_grid(image_grid(list(columns.values()), scale=args.scale), args.out)
    print(f"wrote {path} ({len(images)} rows: {' | '.join(columns)})")
    report_skipped(data)


def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="draw reconstructions: masked | reconstruction | original (MAE), "
                                           "original | reconstruction (tokenizers)",
                       description="Write a PNG with one row per test image and the model's columns: masked input | "
                                   "reconstruction (visible patches pasted back) | original for MAE, original | "
                                   "decode(encode(image)) for a tokenizer such as VQGAN.")
    add_checkpoint_data_args(p)
    p.add_argument("--split", default="test", choices=["train", "test"],
                   help="train or test (default test; --test-data names the test images)")
    p.add_argument("--n", type=positive_int, default=8, help="number of images (rows)")
    p.add_argument("--mask-ratio", type=unit_interval(open_high=True), default=None,
                   help="MAE: override the model's mask ratio, in [0, 1)")
    p.add_argument("--scale", type=picture_scale, default=4, help="pixel enlargement factor for small images")
    p.add_argument("--out", required=True, help="output PNG path")
    p.set_defaults(func=run)
