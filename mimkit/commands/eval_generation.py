"""`mimkit eval generation CKPT --feature-net NET`: FID, Inception Score, precision/recall and CAS of a
masked token model's samples, one row per (decoding steps, schedule) setting.

    mimkit eval generation runs/maskgit_fmnist --feature-net runs/classifier_fmnist \\
        --n 1000 --steps 1,8,12 --schedule cosine,linear --cas

A class-conditional model samples n / C images of every class (CAS trains a fresh classifier on
them and tests it on the real test split); an unconditional one samples without labels (no CAS).
The feature network fits generated and real images to its input size the same way (centre
square, antialiased bicubic for a classifier; 299 px for Inception), and every report names it.
"""
import time

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


def balanced_labels(num_classes: int, n: int):
    """(n,) int64 labels cycling 0..C-1 (None for an unconditional model)."""
    import torch

    return None if num_classes == 0 else torch.arange(n) % num_classes


def real_images(args, config):
    """All images and labels of --split at the model's size: ((M, C, H, W), (M,))."""
    import torch

    from ..data.labels import require_labels
    from ..data.summary import describe_dataset
    from ..eval.features import labelled_batches

    data = load_eval_data(args, config, args.split)
    if getattr(args, "cas", False):
        require_labels(data, args.split, "CAS (--cas)")
    print(f"{args.split} data   {describe_dataset(data, getattr(args, 'seed', 0))}", flush=True)
    images, labels = zip(*((b["images"], b["labels"]) for b in labelled_batches(data, 1024)))
    return torch.cat(images), torch.cat(labels)


def sample_row(args, model, sampler, net, real, real_labels, real_feats) -> dict:
    """Sample --n images with `sampler` and measure them against the real set."""
    import torch

    from ..eval.generation_report import generation_metrics
    from ..generation import generate
    from ..methods.classifier import ClassifierConfig

    labels = balanced_labels(model.num_classes, args.n)
    started = time.perf_counter()
    samples = generate(model, args.n, labels, sampler=sampler, generator=torch.Generator().manual_seed(args.seed),
                       batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    cas_config = None
    if args.cas and labels is not None:  # CAS trains on the samples at their own size
        cas_config = ClassifierConfig(img_size=samples.shape[-1], in_chans=samples.shape[1],
                                      num_classes=model.num_classes)
    metrics = generation_metrics(samples, real, net, labels, real_labels, cas_config, real_features=real_feats,
                                 cas_kwargs={"seed": args.seed, "progress": False})
    score = metrics["inception_score"]
    return {**metrics, "steps": sampler.steps, "schedule": sampler.schedule, "images_per_s": args.n / seconds,
            "inception_score": None if score is None else score[0]}


def format_rows(rows: list[dict]) -> str:
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    lines = ["| steps | schedule | FID | IS | precision | recall | CAS (%) | images/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['schedule']} | {r['fid']:.2f} | {num(r['inception_score'], '.2f')} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {num(r['cas'], '.1f')} | {r['images_per_s']:.1f} |")
    return "\n".join(lines)


def run(args) -> None:
    import torch

    from ..errors import ConfigError
    from ..eval.feature_network import FeatureNetwork
    from ..generation import MaskedTokenSampler
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
    samplers = []
    for steps in parse_list(args.steps, int, "--steps"):
        for schedule in parse_list(args.schedule, str, "--schedule"):
            try:
                samplers.append(MaskedTokenSampler(steps=steps, schedule=schedule,
                                                   choice_temperature=args.choice_temperature,
                                                   guidance_scale=args.guidance))
            except ValueError as err:
                raise ConfigError(str(err)) from None
    real, real_labels = real_images(args, config)
    real_feats = net.features(real, progress=True)
    print(f"model {config.method} ({args.checkpoint}); feature network: {net.name}; {args.n} samples "
          f"{'balanced over ' + str(model.num_classes) + ' classes' if model.num_classes else 'unconditional'} vs "
          f"{len(real)} real {args.split} images; choice temperature {args.choice_temperature}, "
          f"guidance {args.guidance}", flush=True)
    rows = []
    for sampler in samplers:
        torch.manual_seed(args.seed)
        rows.append(sample_row(args, model, sampler, net, real, real_labels, real_feats))
        print(f"  steps {sampler.steps:>3} {sampler.schedule:<7} FID {rows[-1]['fid']:.2f}", flush=True)
    print(format_rows(rows))


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
