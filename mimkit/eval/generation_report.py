"""All generation metrics of one set of samples against real images, and their markdown table.

    net = FeatureNetwork.from_checkpoint("runs/classifier_fmnist")
    metrics = generation_metrics(samples, real_images, net, labels_generated=y, real_labels=y_real,
                                 cas_config=ClassifierConfig())
    print(format_generation_report(metrics))

FID, precision/recall and the Inception Score all use `feature_net`; the report names it, since
numbers from different feature networks cannot be compared (and on small data the network is a
classifier trained on the dataset, not Inception-v3). CAS trains its own classifier.
"""
import torch

from ..methods.classifier import ClassifierConfig
from .cas import classification_accuracy_score
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
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    score = metrics.get("inception_score")
    rows = [
        ("FID (lower is better)", num(metrics.get("fid"), ".3f")),
        ("Inception Score (mean ± std)", "-" if score is None else f"{score[0]:.3f} ± {score[1]:.3f}"),
        (f"precision (k={metrics.get('k', 3)})", num(metrics.get("precision"), ".4f")),
        (f"recall (k={metrics.get('k', 3)})", num(metrics.get("recall"), ".4f")),
        ("CAS top-1 (%)", num(metrics.get("cas"), ".2f")),
    ]
    width = max(len(name) for name, _ in rows)
    value_width = max(5, *(len(value) for _, value in rows))
    lines = [f"feature network: {metrics.get('feature_network', '?')}; "
             f"{metrics.get('num_generated', '?')} generated vs {metrics.get('num_real', '?')} real images", "",
             f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |",
             f"|{'-' * (width + 2)}|{'-' * (value_width + 1)}:|"]
    lines += [f"| {name.ljust(width)} | {value.rjust(value_width)} |" for name, value in rows]
    return "\n".join(lines)
