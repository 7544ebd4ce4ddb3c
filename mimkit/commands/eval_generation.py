"""`mimkit eval generation CKPT --feature-net NET`: FID, Inception Score, precision/recall and CAS of a
masked token model's samples, one row per (decoding steps, schedule) setting.

    mimkit eval generation runs/maskgit_fmnist --feature-net runs/classifier_fmnist \\
        --n 1000 --steps 1,8,12 --schedule cosine,linear --cas

A class-conditional model samples n / C images of every class (CAS trains a fresh classifier on
them and tests it on the real test split); an unconditional one samples without labels (no CAS).
The feature network fits generated and real images to its input size the same way (centre
square, antialiased bicubic for a classifier; 299 px for Inception), and every report names it.
"""
from .arguments import positive_int
from .checkpoint_data import load_eval_data


def parse_list(text: str, cast, what: str) -> list:
    from ..errors import ConfigError

    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{what} must be a comma-separated list, got {text!r}")
    return values


def run(args) -> None:
    from ..data.labels import require_labels
    from ..data.summary import describe_dataset
    from ..errors import ConfigError
    from ..eval.feature_network import FeatureNetwork
    from ..eval.features import dataset_tensors
    from ..eval.generation_report import compare_samplers, format_sampler_table, sampler_grid
    from .generate import load_token_model

    if not args.feature_net:
        raise ConfigError("eval generation needs --feature-net: a classifier checkpoint (e.g. `mimkit train "
                          "classifier_fmnist --out runs/classifier_fmnist`) or an Inception-v3 TorchScript file")
    if args.n < 2:
        raise ConfigError(f"--n must be >= 2, got {args.n}")
    args.device = "cpu"
    model, config = load_token_model(args)
    if args.feature_net.endswith((".pt", ".pth", ".jit", ".ts")):
        net = FeatureNetwork.from_torchscript(args.feature_net)
    else:
        net = FeatureNetwork.from_checkpoint(args.feature_net)
    samplers = sampler_grid(parse_list(args.steps, int, "--steps"), parse_list(args.schedule, str, "--schedule"),
                            choice_temperature=args.choice_temperature, guidance_scale=args.guidance)
    data = load_eval_data(args, config, args.split)
    if args.cas:
        require_labels(data, args.split, "CAS (--cas)")
    print(f"{args.split} data   {describe_dataset(data, args.seed)}", flush=True)
    real, real_labels = dataset_tensors(data)
    real_feats = net.features(real, progress=True)
    print(f"model {config.method} ({args.checkpoint}); feature network: {net.name}; {args.n} samples "
          f"{'balanced over ' + str(model.num_classes) + ' classes' if model.num_classes else 'unconditional'} vs "
          f"{len(real)} real {args.split} images; choice temperature {args.choice_temperature}, "
          f"guidance {args.guidance}", flush=True)
    rows = compare_samplers(model, samplers, net, real, real_labels, n=args.n, seed=args.seed,
                            batch_size=args.batch_size, cas=args.cas, real_features=real_feats,
                            on_row=lambda row: print(f"  steps {row['steps']:>3} {row['schedule']:<7} "
                                                     f"FID {row['fid']:.2f}", flush=True))
    print(format_sampler_table(rows))


def add_generation_args(p) -> None:
    """The options of `mimkit eval generation` (registered on the `eval` parser)."""
    g = p.add_argument_group("generation (mimkit eval generation)")
    g.add_argument("--feature-net", help="classifier checkpoint or Inception-v3 TorchScript file (.pt) for FID/IS/PR")
    g.add_argument("--n", type=positive_int, default=1000, help="samples per setting (default 1000)")
    g.add_argument("--steps", default="12", help="decoding steps, comma-separated (default 12)")
    g.add_argument("--schedule", default="cosine", help="mask schedules, comma-separated (default cosine)")
    g.add_argument("--choice-temperature", type=float, default=4.5)
    g.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale (0 = off)")
    g.add_argument("--cas", action="store_true", help="also train a classifier on the samples, test on real (CAS)")
