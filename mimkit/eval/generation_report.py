"""All generation metrics of one set of samples against real images, and their markdown table.

    net = FeatureNetwork.from_checkpoint("runs/classifier_fmnist")
    metrics = generation_metrics(samples, real_images, net, labels_generated=y, real_labels=y_real,
                                 cas_config=ClassifierConfig())
    print(format_generation_report(metrics))

FID, precision/recall and the Inception Score all use `feature_net`; the report names it, since
numbers from different feature networks cannot be compared (and on small data the network is a
classifier trained on the dataset, not Inception-v3). CAS trains its own classifier.

Several decoding settings of one masked token model against one real set (`mimkit eval generation`):

    real, real_labels = dataset_tensors(test_set)
    rows = compare_samplers(model, sampler_grid([1, 8, 12], ["cosine", "linear"]), net, real, real_labels, n=1000)
    print(format_sampler_table(rows))
"""
import time
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError
from ..generation import MaskedTokenSampler, generate
from ..methods.classifier import ClassifierConfig
from .cas import classification_accuracy_score
from .comparison import number
from .feature_network import FeatureNetwork
from .frechet import feature_statistics, frechet_distance
from .inception_score import inception_score
from .precision_recall import precision_recall


def _check_images(images: torch.Tensor, which: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{which} images must be a float tensor (N, C, H, W) in [0, 1], got {shape}")
    if len(images) < 2:
        raise ValueError(f"generation metrics need at least 2 {which} images, got {len(images)}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{which} images must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]; "
                         f"map [-1, 1] outputs with (x + 1) / 2")


def generation_metrics(generated: torch.Tensor, real: torch.Tensor, feature_net: FeatureNetwork,
                       labels_generated: torch.Tensor | None = None, real_labels: torch.Tensor | None = None,
                       cas_config: ClassifierConfig | None = None, *, k: int = 3, splits: int = 10,
                       cas_kwargs: dict | None = None, progress: bool = False,
                       real_features: torch.Tensor | None = None) -> dict:
    """FID, Inception Score, precision/recall (and CAS) of generated images against real ones.

    Args:
        generated: (N, C, H, W) samples in [0, 1]; real: (M, C, H, W) real images in [0, 1].
        feature_net: the network for FID / IS / precision-recall.
        labels_generated: (N,) the classes the samples were generated for; real_labels: (M,).
        cas_config: when given (with both label sets), CAS trains a Classifier of this config on
            the labelled samples and tests it on the labelled real images.
        k: neighbourhood size of precision/recall. splits: IS splits (capped at N).
        cas_kwargs: passed to `classification_accuracy_score` (epochs, lr, seed, num_threads, ...).
        real_features: feature_net's features of `real` (M, D) when already computed (several
            sample sets against one real set); `real` is then only used for CAS.

    Returns:
        {"feature_network": name, "num_generated": N, "num_real": M, "fid": float,
         "inception_score": (mean, std) or None when the network has no logits,
         "precision": float, "recall": float, "k": k, "cas": accuracy % or None}
    """
    _check_images(generated, "generated")
    _check_images(real, "real")
    if cas_config is not None and (labels_generated is None or real_labels is None):
        raise ValueError("CAS needs labels_generated (the classes the samples were generated for) and "
                         "real_labels; pass both, or cas_config=None to skip CAS")
    gen_feats, gen_logits = feature_net.features_and_logits(generated, progress, desc="generated features")
    real_feats = feature_net.features(real, progress) if real_features is None else real_features
    fid = frechet_distance(*feature_statistics(gen_feats), *feature_statistics(real_feats))
    pr = precision_recall(real_feats, gen_feats, k=k)
    score = None
    if gen_logits is not None:
        score = inception_score(gen_logits.double().softmax(dim=1), splits=min(splits, len(generated)))
    cas = None
    if cas_config is not None:
        kwargs = {"progress": progress, **(cas_kwargs or {})}
        cas = classification_accuracy_score(generated, labels_generated, real, real_labels, cas_config,
                                            **kwargs).accuracy
    return {"feature_network": feature_net.name, "num_generated": len(generated), "num_real": len(real),
            "fid": fid, "inception_score": score, "precision": pr.precision, "recall": pr.recall, "k": k,
            "cas": cas}


def format_generation_report(metrics: dict) -> str:
    """A markdown table of `generation_metrics`' dict (absent metrics show as "-"), headed by the
    feature network's name and the sample counts."""
    score = metrics.get("inception_score")
    rows = [
        ("FID (lower is better)", number(metrics.get("fid"), ".3f")),
        ("Inception Score (mean ± std)", "-" if score is None else f"{score[0]:.3f} ± {score[1]:.3f}"),
        (f"precision (k={metrics.get('k', 3)})", number(metrics.get("precision"), ".4f")),
        (f"recall (k={metrics.get('k', 3)})", number(metrics.get("recall"), ".4f")),
        ("CAS top-1 (%)", number(metrics.get("cas"), ".2f")),
    ]
    width = max(len(name) for name, _ in rows)
    value_width = max(5, *(len(value) for _, value in rows))
    lines = [f"feature network: {metrics.get('feature_network', '?')}; "
             f"{metrics.get('num_generated', '?')} generated vs {metrics.get('num_real', '?')} real images", "",
             f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |",
             f"|{'-' * (width + 2)}|{'-' * (value_width + 1)}:|"]
    lines += [f"| {name.ljust(width)} | {value.rjust(value_width)} |" for name, value in rows]
    return "\n".join(lines)


def balanced_labels(num_classes: int, n: int) -> torch.Tensor | None:
    """(n,) int64 labels cycling 0..C-1, so every class gets n / C samples (None for an
    unconditional model, num_classes 0)."""
    return None if num_classes == 0 else torch.arange(n) % num_classes


def sampler_grid(steps: Sequence[int], schedules: Sequence[str], *, choice_temperature: float = 4.5,
                 guidance_scale: float = 0.0) -> list[MaskedTokenSampler]:
    """One MaskedTokenSampler per (steps, schedule), steps-major; ConfigError for a bad setting."""
    samplers = []
    for count in steps:
        for schedule in schedules:
            try:
                samplers.append(MaskedTokenSampler(steps=count, schedule=schedule,
                                                   choice_temperature=choice_temperature,
                                                   guidance_scale=guidance_scale))
            except ValueError as err:
                raise ConfigError(str(err)) from None
    return samplers


def sample_metrics(model, sampler: MaskedTokenSampler, feature_net: FeatureNetwork, real: torch.Tensor,
                   real_labels: torch.Tensor | None = None, *, n: int, seed: int = 0, batch_size: int | None = None,
                   cas: bool = False, real_features: torch.Tensor | None = None) -> dict:
    """Sample n images from a masked token model with `sampler` (balanced over the classes of a
    class-conditional model) and measure them against the real images (N, C, H, W) in [0, 1].

    Seeds torch's global RNG with `seed`, samples with a generator seeded with `seed` in batches of
    `batch_size`; cas (with a class-conditional model and real_labels) trains a classifier on the
    samples at their own size and tests it on the real images. real_features: feature_net's
    features of `real` when already computed.

    Returns `generation_metrics`' dict with the Inception Score's mean only, plus "steps",
    "schedule" (the sampler's) and "images_per_s" (sampling throughput).
    """
    torch.manual_seed(seed)
    labels = balanced_labels(model.num_classes, n)
    started = time.perf_counter()
    samples = generate(model, n, labels, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                       batch_size=batch_size)
    seconds = time.perf_counter() - started
    cas_config = None
    if cas and labels is not None:
        cas_config = ClassifierConfig(img_size=samples.shape[-1], in_chans=samples.shape[1],
                                      num_classes=model.num_classes)
    metrics = generation_metrics(samples, real, feature_net, labels, real_labels, cas_config,
                                 real_features=real_features, cas_kwargs={"seed": seed, "progress": False})
    score = metrics["inception_score"]
    return {**metrics, "steps": sampler.steps, "schedule": sampler.schedule, "images_per_s": n / seconds,
            "inception_score": None if score is None else score[0]}


def compare_samplers(model, samplers: Sequence[MaskedTokenSampler], feature_net: FeatureNetwork,
                     real: torch.Tensor, real_labels: torch.Tensor | None = None, *, n: int, seed: int = 0,
                     batch_size: int | None = None, cas: bool = False, real_features: torch.Tensor | None = None,
                     on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """`sample_metrics` of every sampler (same n, seed and real set; the real features computed
    once unless given), in order; on_row(row) is called after each (e.g. to print progress)."""
    if real_features is None:
        real_features = feature_net.features(real)
    rows = []
    for sampler in samplers:
        rows.append(sample_metrics(model, sampler, feature_net, real, real_labels, n=n, seed=seed,
                                   batch_size=batch_size, cas=cas, real_features=real_features))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def format_sampler_table(rows: list[dict]) -> str:
    """A markdown table of `compare_samplers`' rows: steps | schedule | FID | IS | precision |
    recall | CAS (%) | images/s (absent metrics show as "-")."""
    lines = ["| steps | schedule | FID | IS | precision | recall | CAS (%) | images/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['schedule']} | {r['fid']:.2f} | {number(r['inception_score'])} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {number(r['cas'], '.1f')} | "
                     f"{r['images_per_s']:.1f} |")
    return "\n".join(lines)
