"""`mimkit eval linear|knn|probes CKPT`: frozen-feature probes, pretrained vs random init;
`mimkit eval tokenizer CKPT`: PSNR and codebook usage of an image tokenizer (eval_tokenizer.py)."""
from .checkpoint_data import add_checkpoint_data_args, load_eval_data


def run(args) -> None:
    if args.protocol == "tokenizer":
        from .eval_tokenizer import run as run_tokenizer

        return run_tokenizer(args)

    import torch

    from ..engine.checkpoint import load_model
    from ..errors import MimkitError
    from ..eval import compare_with_random_init, format_comparison_table
    from ..methods import build_model

    model, config = load_model(args.checkpoint)
    if not hasattr(model, "features"):
        raise MimkitError(f"{args.checkpoint} is a {config.method} checkpoint without encoder features to probe; "
                          f"for a tokenizer use `mimkit eval tokenizer {args.checkpoint}`")
    train_set = load_eval_data(args, config, "train")
    test_set = load_eval_data(args, config, "test")
    torch.manual_seed(args.seed)
    random_model = build_model(config.method, config.model).eval()
    probes = ("linear", "knn") if args.protocol == "probes" else (args.protocol,)
    pools = ("cls", "mean") if args.pool == "both" else (args.pool,)
    rows = compare_with_random_init(model, random_model, train_set, test_set, method=config.method, pools=pools,
                                    batch_size=args.batch_size, probes=probes, linear_kwargs={"seed": args.seed})
    print(format_comparison_table(rows))


def register(sub) -> None:
    p = sub.add_parser("eval", help="linear probe / k-NN of an encoder vs random init; PSNR / usage of a tokenizer",
                       description="linear|knn|probes: frozen-feature evaluation on the train/test splits, printing "
                                   "top-1 of the pretrained encoder next to the same architecture at random init. "
                                   "tokenizer: PSNR of decode(encode(x)), codebook usage and perplexity on --split.")
    p.add_argument("protocol", choices=["linear", "knn", "probes", "tokenizer"],
                   help="probes = linear and knn; tokenizer = reconstruction PSNR and codebook usage")
    add_checkpoint_data_args(p)
    p.add_argument("--pool", choices=["cls", "mean", "both"], default="cls",
                   help="probes: cls token, mean of patch tokens, or both (one row each)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="tokenizer: the split to evaluate")
    p.add_argument("--batch-size", type=int, default=512)
    p.set_defaults(func=run)
