"""`mimkit eval linear|knn|probes CKPT`: frozen-feature probes, pretrained vs random init;
`mimkit eval fewshot CKPT --shots 1,5,10,25 --seeds 5`: logistic regression on k images per class, the same;
`mimkit eval finetune CKPT --epochs 5 [--trainable-blocks 0,1,2,all]`: end-to-end fine-tuning (MAE recipe:
layer-wise lr decay, label smoothing, optional mixup / cutmix / drop path; partial fine-tuning), the same;
`mimkit eval layerwise CKPT --pool mean`: a linear probe on every block's output, the same;
`mimkit eval tokenizer CKPT`: PSNR and codebook usage of an image tokenizer (eval_tokenizer.py);
`mimkit eval generation CKPT --feature-net NET`: FID / IS / precision-recall / CAS of samples (eval_generation.py)."""
from .checkpoint_data import add_checkpoint_data_args, load_labelled_splits, report_skipped
from .arguments import non_negative_float, positive_float, positive_int, unit_interval
from .eval_generation import add_generation_args


def run(args) -> None:
    if args.batch_size is None:
        args.batch_size = 128 if args.protocol == "finetune" else 512
    if args.protocol == "tokenizer":
        from .eval_tokenizer import run as run_tokenizer

        return run_tokenizer(args)
    if args.protocol == "generation":
        from .eval_generation import run as run_generation

        return run_generation(args)

    import torch

    from ..registry import load_model
    from ..errors import MimkitError
    from ..eval.comparison import compare_with_random_init, format_comparison_table
    from ..eval.protocols import make_protocol
    from ..eval.report import random_init_like

    model, config = load_model(args.checkpoint)
    if not hasattr(model, "features"):
        raise MimkitError(f"{args.checkpoint} is a {config.method} checkpoint without encoder features to probe; "
                          f"for a tokenizer use `mimkit eval tokenizer {args.checkpoint}`")
    protocol = make_protocol(args.protocol, **protocol_options(args))
    train_set, test_set = load_labelled_splits(args, config, f"eval {args.protocol}")
    torch.manual_seed(args.seed)
    random_model = random_init_like(model, config, seed=args.seed)
    pools = ("cls", "mean") if args.pool == "both" else None if args.pool is None else (args.pool,)
    rows = compare_with_random_init(model, random_model, protocol, train_set, test_set, method=config.method,
                                    pools=pools)
    print(format_comparison_table(rows, protocol))
    report_skipped(train_set, test_set)


def protocol_options(args) -> dict:
    """The options of the probe protocol `args.protocol` (linear, knn, probes, fewshot, finetune,
    layerwise) from the command line (mimkit.eval.protocols.make_protocol)."""
    if args.protocol == "finetune":
        return dict(trainable_blocks=args.trainable_blocks, epochs=args.epochs or 5, batch_size=args.batch_size,
                    lr=args.lr, blr=args.blr, layer_decay=args.layer_decay, drop_path=args.drop_path,
                    label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix, seed=args.seed)
    if args.protocol == "layerwise":
        return dict(batch_size=args.batch_size, linear_kwargs={"seed": args.seed, "epochs": args.epochs or 30})
    if args.protocol == "fewshot":
        return dict(shots=args.shots, seeds=range(args.seed, args.seed + args.seeds), batch_size=args.batch_size)
    return dict(batch_size=args.batch_size, linear_kwargs={"seed": args.seed})


# What each protocol does, for `mimkit eval --help`.
PROTOCOL_HELP = {
    "linear|knn|probes": "frozen-feature evaluation on the train/test splits, printing top-1 of the pretrained "
                         "encoder next to the same architecture at random init.",
    "fewshot": "the same comparison with a logistic regression on --shots train images per class, mean and std "
               "over --seeds draws.",
    "finetune": "the same comparison after end-to-end fine-tuning (AdamW, layer-wise lr decay, warmup + cosine, "
                "label smoothing, flips; optional mixup / cutmix / drop path); --trainable-blocks N trains only "
                "the last N blocks + head (MAE Fig. 9).",
    "layerwise": "a linear probe on the output of every block (0 = patch embedding).",
    "tokenizer": "PSNR of decode(encode(x)), codebook usage and perplexity on --split.",
    "generation": "FID, IS, precision/recall (and CAS) of a masked token model's samples against --split, "
                  "through --feature-net.",
}


def register(sub) -> None:
    p = sub.add_parser("eval", help="probes of an encoder vs random init; a tokenizer's PSNR / usage; sample metrics",
                       description=" ".join(f"{name}: {text}" for name, text in PROTOCOL_HELP.items()))
    p.add_argument("protocol", choices=["linear", "knn", "probes", "fewshot", "finetune", "layerwise", "tokenizer",
                                        "generation"],
                   help="probes = linear and knn; fewshot = logistic regression on k images per class; "
                        "finetune = end-to-end fine-tuning; layerwise = linear probe per block; "
                        "tokenizer = reconstruction PSNR and codebook usage; generation = sample metrics")
    add_checkpoint_data_args(p)
    p.add_argument("--pool", choices=["cls", "mean", "both"], default=None,
                   help="probes, fewshot, finetune, layerwise: cls token, mean of patch tokens, or both (one row "
                        "each); default cls, mean for finetune (MAE's global pool)")
    p.add_argument("--shots", type=shot_list, default=(1, 5, 10, 25),
                   help="fewshot: comma-separated train images per class, one row each (default 1,5,10,25)")
    p.add_argument("--seeds", type=positive_int, default=5,
                   help="fewshot: draws of the k images per class (seeds --seed .. --seed+N-1); "
                        "mean and std over them")
    p.add_argument("--split", default="test", choices=["train", "test"], help="tokenizer: the split to evaluate")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default 512; finetune: 128, the training batch)")
    add_finetune_args(p)
    add_generation_args(p)
    p.set_defaults(func=run)


def add_finetune_args(p) -> None:
    g = p.add_argument_group("fine-tuning (mimkit eval finetune) and layer-wise probes (mimkit eval layerwise)")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help="finetune: passes over the train split (default 5); "
                        "layerwise: linear-probe epochs (default 30)")
    rate = g.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=positive_float, default=None,
                      help="finetune: peak learning rate (default blr * batch / 256)")
    rate.add_argument("--blr", type=positive_float, default=4e-3,
                      help="finetune: base learning rate, scaled by --batch-size / 256 (default 4e-3: on a 4-block "
                           "Fashion-MNIST MAE, 3 epochs reach 66/75/78%% test top-1 at 1e-3/4e-3/8e-3)")
    g.add_argument("--layer-decay", type=unit_interval(open_low=True), default=0.75,
                   help="finetune: layer-wise lr decay d in (0, 1], lr scale d^(L+1-layer) (default 0.75; 1 = off)")
    g.add_argument("--drop-path", type=unit_interval(open_high=True), default=None,
                   help="finetune: stochastic depth rate in [0, 1) (default: the model's own)")
    g.add_argument("--label-smoothing", type=unit_interval(open_high=True), default=0.1,
                   help="finetune: label smoothing in [0, 1) (default 0.1)")
    g.add_argument("--mixup", type=non_negative_float, default=0.0,
                   help="finetune: mixup alpha (default 0 = off; MAE 0.8)")
    g.add_argument("--cutmix", type=non_negative_float, default=0.0,
                   help="finetune: cutmix alpha (default 0 = off; MAE 1.0)")
    g.add_argument("--trainable-blocks", type=block_list, default=(None,),
                   help="finetune: partial fine-tuning, comma-separated numbers of last blocks to train (0 = only the "
                        "head) or 'all', one row each, e.g. 0,1,2,4,all (default all = full fine-tuning)")


def block_list(text: str) -> tuple[int | None, ...]:
    """argparse type: '0,1,2,all' -> (0, 1, 2, None); each a non-negative integer or 'all' (None)."""
    import argparse

    values = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            values.append(None)
        elif part.isdigit():
            values.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"expected comma-separated block counts >= 0 or 'all' such as 0,1,2,all, "
                                             f"got {text!r}")
    return tuple(values)


def shot_list(text: str) -> tuple[int, ...]:
    """argparse type: '1,5,10,25' -> (1, 5, 10, 25), each a positive integer."""
    import argparse

    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,5,10,25, "
                                         f"got {text!r}") from None
