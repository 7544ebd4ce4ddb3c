"""`mimkit tokenize CKPT --data NAME --out DIR`: pre-extract a tokenizer's codes into a token cache."""
from .arguments import non_negative_int, positive_int
from .checkpoint_data import add_checkpoint_data_args, eval_sources, load_eval_data


def parse_views(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def run(args) -> None:
    from ..data.evaluation_data import image_source, split_source
    from ..data.summary import describe_dataset
    from ..registry import load_model
    from ..files.checkpoint_folder import resolve_checkpoint
    from ..errors import CheckpointError, ConfigError
    from ..tokenizers.cache import build_token_cache, cache_summary

    if args.crops < 0 or args.batch_size <= 0:
        raise ConfigError(f"--crops must be >= 0 and --batch-size > 0, got {args.crops} and {args.batch_size}")
    model, config = load_model(args.checkpoint)
    if not callable(getattr(model, "encode", None)):
        raise CheckpointError(f"{resolve_checkpoint(args.checkpoint)} holds a {config.method!r} model, not a tokenizer "
                              "(it has no encode()); give a tokenizer checkpoint, e.g. a `mimkit train vqgan_...` run")
    dataset = load_eval_data(args, config, args.split)
    print(f"{args.split} data   {describe_dataset(dataset, args.seed)}", flush=True)
    name = image_source(split_source(config, args.split, eval_sources(args))[0].name)
    source = f"{name}:{dataset.split}" if dataset.split else name
    out = build_token_cache(model, dataset, args.out, views=parse_views(args.views), crops=args.crops, seed=args.seed,
                            batch_size=args.batch_size, progress=not args.no_progress, source=source,
                            overwrite=args.overwrite)
    print(cache_summary(out))


def register(sub) -> None:
    p = sub.add_parser("tokenize", help="pre-extract a tokenizer's codes of a dataset into a token cache",
                       description="Encode every image of a dataset in K views (identity, horizontal flip, optional "
                                   "seeded random crops) with a tokenizer checkpoint and write DIR/codes.npy "
                                   "(N, K, h, w), DIR/labels.npy and DIR/manifest.json. The folder appears only "
                                   "when complete. Train token models on it with mimkit.tokenizers.TokenCacheDataset.")
    add_checkpoint_data_args(p)
    p.add_argument("--split", default="train", choices=["train", "test"], help="train or test (default train)")
    p.add_argument("--views", default="identity,hflip", help="comma-separated base views (default identity,hflip)")
    p.add_argument("--crops", type=non_negative_int, default=0,
                   help="extra random-resized-crop views per image (area 0.8-1, coin-flip mirror; drawn from --seed)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--out", required=True, help="cache folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache folder at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
