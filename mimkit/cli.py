"""The `mimkit` command: it only parses arguments into configs and calls the library.

    mimkit presets
    mimkit train PRESET_OR_YAML [key=value ...] [--resume]
    mimkit reconstruct CKPT --data fashion-mnist --out grid.png
    mimkit eval linear|knn|probes CKPT --data fashion-mnist
"""
import argparse
import sys

from .errors import MimkitError

EPILOG = "Run `mimkit COMMAND --help` for the options of a command. Docs: README.md."


def cmd_presets(args) -> None:
    from .presets import all_presets

    table = all_presets()
    width = max(len(name) for name in table)
    for name in sorted(table):
        p = table[name]
        m, t = p.get("model", {}), p.get("train", {})
        print(f"{name:<{width}}  {p['method']:<6} {m.get('img_size')}px patch {m.get('patch_size')} "
              f"dim {m.get('embed_dim')} x{m.get('depth')}  data={p.get('data', {}).get('name')}  steps={t.get('steps')}")


def cmd_train(args) -> None:
    from .config import load_config
    from .train import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    config = load_config(args.config, overrides)
    run_dir = train(config, resume=args.resume)
    print(f"checkpoints, log.csv and pictures in {run_dir}")


def load_eval_data(args, model, config, split: str):
    """The dataset an evaluation command reads: --data (default: the run's data) at the model's size."""
    from .data import build_dataset
    from dataclasses import replace

    from .data.config import DataConfig
    from .nn import to_pair

    base = config.data if args.data is None else replace(DataConfig(), name=args.data)
    data_cfg = replace(base, split=split, augment=False, limit=args.limit, image_size=to_pair(config.model.img_size)[0],
                       root=args.data_root or base.root)
    return build_dataset(data_cfg, channels=model.config.in_chans, split=split)


def cmd_reconstruct(args) -> None:
    import torch

    from .engine.checkpoint import load_model
    from .pictures import reconstruction_grid, save_grid

    model, config = load_model(args.checkpoint)
    data = load_eval_data(args, model, config, args.split)
    n = min(args.n, len(data))
    g = torch.Generator().manual_seed(args.seed)
    indices = torch.randperm(len(data), generator=g)[:n]
    images = torch.stack([data[int(i)]["images"] for i in indices])
    picture = reconstruction_grid(model, images, seed=args.seed, mask_ratio=args.mask_ratio, scale=args.scale)
    path = save_grid(picture, args.out)
    print(f"wrote {path} ({n} rows: masked | reconstruction | original)")


def cmd_eval(args) -> None:
    import torch

    from .engine.checkpoint import load_model
    from .eval import compare_with_random_init, format_comparison_table
    from .methods import build_model

    model, config = load_model(args.checkpoint)
    train_set = load_eval_data(args, model, config, "train")
    test_set = load_eval_data(args, model, config, "test")
    torch.manual_seed(args.seed)
    random_model = build_model(config.method, config.model).eval()
    probes = ("linear", "knn") if args.protocol == "probes" else (args.protocol,)
    pools = ("cls", "mean") if args.pool == "both" else (args.pool,)
    rows = compare_with_random_init(model, random_model, train_set, test_set, method=config.method, pools=pools,
                                    batch_size=args.batch_size, probes=probes,
                                    linear_kwargs={"seed": args.seed})
    print(format_comparison_table(rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimkit", description="Masked image modeling: train, picture, evaluate.",
                                     epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="pretrain a model from a preset or YAML file",
                       description="Pretrain from a preset name (see `mimkit presets`) or a YAML file, with "
                                   "key=value overrides such as train.steps=500 optim.blr=1e-3 data.name=digits.")
    p.add_argument("config", help="preset name or path to a .yaml config")
    p.add_argument("overrides", nargs="*", help="key=value overrides (sections: model, data, optim, train)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--out", help="run folder (same as train.out_dir=...)")
    p.set_defaults(func=cmd_train)

    def data_args(p):
        p.add_argument("checkpoint", help="checkpoint folder, run folder (uses its latest checkpoint) or model.safetensors")
        p.add_argument("--data", help="dataset: fashion-mnist, digits or a path (default: the run's own data)")
        p.add_argument("--data-root", default="", help="folder of the Fashion-MNIST IDX files")
        p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split (0 = all)")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("reconstruct", help="draw masked input | reconstruction | original",
                       description="Write a PNG: one row per test image, columns masked input | reconstruction "
                                   "(visible patches pasted back) | original.")
    data_args(p)
    p.add_argument("--split", default="test", help="train or test (default test)")
    p.add_argument("--n", type=int, default=8, help="number of images (rows)")
    p.add_argument("--mask-ratio", type=float, default=None, help="override the model's mask ratio")
    p.add_argument("--scale", type=int, default=4, help="pixel enlargement factor for small images")
    p.add_argument("--out", required=True, help="output PNG path")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("eval", help="linear probe / k-NN of a pretrained encoder vs random init",
                       description="Frozen-feature evaluation on the train/test splits. Prints top-1 of the "
                                   "pretrained encoder next to the same architecture at random init.")
    p.add_argument("protocol", choices=["linear", "knn", "probes"], help="probes = linear and knn")
    data_args(p)
    p.add_argument("--pool", choices=["cls", "mean", "both"], default="cls",
                   help="feature: cls token, mean of patch tokens, or both (one row each)")
    p.add_argument("--batch-size", type=int, default=512)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MimkitError as err:
        print(f"mimkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
