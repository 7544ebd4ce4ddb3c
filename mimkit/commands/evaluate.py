"""`mimkit eval linear|knn|probes CKPT`: frozen-feature probes, pretrained vs random init;
`mimkit eval fewshot CKPT --shots 1,5,10,25 --seeds 5`: logistic regression on k images per class, the same;
`mimkit eval tokenizer CKPT`: PSNR and codebook usage of an image tokenizer (eval_tokenizer.py);
`mimkit eval generation CKPT --feature-net NET`: FID / IS / precision-recall / CAS of samples (eval_generation.py)."""
from .checkpoint_data import add_checkpoint_data_args, load_eval_data
from .eval_generation import add_generation_args


def run(args) -> None:
    if args.protocol == "tokenizer":
        from .eval_tokenizer import run as run_tokenizer

        return run_tokenizer(args)
    if args.protocol == "generation":
        from .eval_generation import run as run_generation

        return run_generation(args)

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
    if hasattr(model, "tokenizer"):  # a token model's baseline: random transformer, the same trained tokenizer
        random_model.tokenizer.load_state_dict(model.tokenizer.state_dict())
    pools = ("cls", "mean") if args.pool == "both" else (args.pool,)
    if args.protocol == "fewshot":
        from ..eval.fewshot import compare_fewshot_with_random_init, format_fewshot_table

        seeds = range(args.seed, args.seed + args.seeds)
        rows = compare_fewshot_with_random_init(model, random_model, train_set, test_set, method=config.method,
                                                pools=pools, shots=args.shots, seeds=seeds,
                                                batch_size=args.batch_size)
        return print(format_fewshot_table(rows))
    probes = ("linear", "knn") if args.protocol == "probes" else (args.protocol,)
    rows = compare_with_random_init(model, random_model, train_set, test_set, method=config.method, pools=pools,
                                    batch_size=args.batch_size, probes=probes, linear_kwargs={"seed": args.seed})
    print(format_comparison_table(rows))


def register(sub) -> None:
    p = sub.add_parser("eval", help="probes of an encoder vs random init; a tokenizer's PSNR / usage; sample metrics",
                       description="linear|knn|probes: frozen-feature evaluation on the train/test splits, printing "
                                   "top-1 of the pretrained encoder next to the same architecture at random init. "
                                   "fewshot: the same comparison with a logistic regression on --shots train images "
                                   "per class, mean and std over --seeds draws. "
                                   "tokenizer: PSNR of decode(encode(x)), codebook usage and perplexity on --split. "
                                   "generation: FID, IS, precision/recall (and CAS) of a masked token model's samples "
                                   "against --split, through --feature-net.")
    p.add_argument("protocol", choices=["linear", "knn", "probes", "fewshot", "tokenizer", "generation"],
                   help="probes = linear and knn; fewshot = logistic regression on k images per class; "
                        "tokenizer = reconstruction PSNR and codebook usage; generation = sample metrics")
    add_checkpoint_data_args(p)
    p.add_argument("--pool", choices=["cls", "mean", "both"], default="cls",
                   help="probes and fewshot: cls token, mean of patch tokens, or both (one row each)")
    p.add_argument("--shots", type=shot_list, default=(1, 5, 10, 25),
                   help="fewshot: comma-separated train images per class, one row each (default 1,5,10,25)")
    p.add_argument("--seeds", type=positive_int, default=5,
                   help="fewshot: draws of the k images per class (seeds --seed .. --seed+N-1); "
                        "mean and std over them")
    p.add_argument("--split", default="test", choices=["train", "test"], help="tokenizer: the split to evaluate")
    p.add_argument("--batch-size", type=int, default=512)
    add_generation_args(p)
    p.set_defaults(func=run)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def shot_list(text: str) -> tuple[int, ...]:
    """argparse type: '1,5,10,25' -> (1, 5, 10, 25), each a positive integer."""
    import argparse

    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,5,10,25, "
                                         f"got {text!r}") from None
