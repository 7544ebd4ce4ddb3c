"""`mimkit train PRESET_OR_YAML [key=value ...]`: pretrain a model."""
from .arguments import thread_count


def run(args) -> None:
    from ..config import check_image_size, load_config
    from ..engine.run_dir import SKIPPED_FILE
    from ..train import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    config = load_config(args.config, overrides)
    check_image_size(config)
    run_dir = train(config, resume=args.resume, allow_change=args.allow_change or ())
    print(f"checkpoints, log.csv and pictures in {run_dir}")
    skipped = run_dir / SKIPPED_FILE
    if skipped.is_file():
        count = len(skipped.read_text().splitlines())  # distinct files, as log.csv's skipped_images
        print(f"skipped {count} unreadable image file(s) (data.on_error=skip); they are listed in {skipped}")


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain a model from a preset or YAML file",
                       description="Pretrain from a preset name (see `mimkit presets`) or a YAML file, with "
                                   "key=value overrides such as train.steps=500 optim.blr=1e-3 data.name=digits.")
    p.add_argument("config", help="preset name or path to a .yaml config")
    p.add_argument("overrides", nargs="*", help="key=value overrides (sections: model, data, optim, train)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint "
                   "(with the recipe it was started with)")
    p.add_argument("--allow-change", metavar="KEY[,KEY]", action="append",
                   help="with --resume: recipe keys that may differ from the checkpoint's config, e.g. "
                        "train.steps to train further or optim.blr; the changes are recorded in config.json")
    p.add_argument("--out", help="run folder (same as train.out_dir=...)")
    p.add_argument("--threads", type=thread_count, default=0,
                   help="torch CPU threads (same as train.threads=N; 0 = the config's / torch's default)")
    p.set_defaults(func=run)
