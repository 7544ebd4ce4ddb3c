"""Probe a pretrained model and the same architecture at random init, and print them side by side.

A probe number alone says little on small data: a random-init ViT already gives a non-trivial
linear/k-NN accuracy on MNIST-like images. The gain over random init is what pretraining bought.
"""
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .features import extract_features
from .knn import KNNResult, knn_accuracy
from .linprobe import LinearProbeResult, linear_probe


@dataclass
class ProbeReport:
    """Both probes of one model with one pooling."""

    pool: str
    linear: LinearProbeResult | None
    knn: KNNResult | None


@dataclass
class ProbeComparison:
    """One table row: top-1 accuracies (%) of the pretrained and the random-init model."""

    method: str
    pool: str
    linear_pretrained: float | None
    linear_random: float | None
    knn_pretrained: float | None
    knn_random: float | None

    @property
    def linear_gain(self) -> float | None:
        """Linear-probe top-1 of pretrained minus random init, in points (None if not run)."""
        return None if self.linear_pretrained is None else self.linear_pretrained - self.linear_random

    @property
    def knn_gain(self) -> float | None:
        """k-NN top-1 of pretrained minus random init, in points (None if not run)."""
        return None if self.knn_pretrained is None else self.knn_pretrained - self.knn_random

    def to_dict(self) -> dict:
        """Plain dict (for JSON logs), gains included."""
        return {**asdict(self), "linear_gain": self.linear_gain, "knn_gain": self.knn_gain}


def random_init_like(model: nn.Module, config, seed: int = 0) -> nn.Module:
    """The random-init baseline of `model`: the same architecture (`config`, a RunConfig) at a fresh
    init seeded with `seed`, in eval mode; the global RNG is left as it was. A token model keeps its
    trained tokenizer: its baseline is a random transformer over the same tokens."""
    from ..methods import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_model(config.method, config.model).eval()
    if hasattr(model, "tokenizer"):
        fresh.tokenizer.load_state_dict(model.tokenizer.state_dict())
    return fresh


def probe_model(model: nn.Module, train_set, test_set, *, pool: str = "cls", batch_size: int = 512,
                device=None, linear_kwargs: dict | None = None, knn_kwargs: dict | None = None,
                progress: bool = True, probes=("linear", "knn")) -> ProbeReport:
    """Extract frozen features of both splits once, then run the linear probe and/or the k-NN.

    linear_kwargs / knn_kwargs are passed to `linear_probe` / `knn_accuracy` (e.g. epochs, k);
    `probes` names which of the two to run (the other is None in the report).
    """
    train = extract_features(model, train_set, batch_size, device, pool, progress, desc=f"train features ({pool})")
    test = extract_features(model, test_set, batch_size, device, pool, progress, desc=f"test features ({pool})")
    unknown = set(probes) - {"linear", "knn"}
    if unknown:
        raise ValueError(f"unknown probe {sorted(unknown)[0]!r}; probes are linear and knn")
    linear = linear_probe(*train, *test, progress=progress, **(linear_kwargs or {})) if "linear" in probes else None
    knn = knn_accuracy(*train, *test, progress=progress, **(knn_kwargs or {})) if "knn" in probes else None
    return ProbeReport(pool=pool, linear=linear, knn=knn)


def compare_with_random_init(pretrained: nn.Module, random_init: nn.Module, train_set, test_set, *,
                             method: str = "", pools=("cls",), batch_size: int = 512, device=None,
                             linear_kwargs: dict | None = None, knn_kwargs: dict | None = None,
                             progress: bool = True, probes=("linear", "knn")) -> list[ProbeComparison]:
    """One `ProbeComparison` per pool, in the order of `pools`.

    The caller builds `random_init` as the same architecture as `pretrained`, freshly initialised
    (e.g. `build_model(method, config)` without loading weights). Both get the same probe
    recipe and seeds, so the gain is due to the weights alone.
    """
    if isinstance(pools, str):
        pools = (pools,)
    rows = []
    for pool in pools:
        kwargs = dict(pool=pool, batch_size=batch_size, device=device, linear_kwargs=linear_kwargs,
                      knn_kwargs=knn_kwargs, progress=progress, probes=probes)
        pre = probe_model(pretrained, train_set, test_set, **kwargs)
        rnd = probe_model(random_init, train_set, test_set, **kwargs)
        rows.append(ProbeComparison(
            method=method, pool=pool,
            linear_pretrained=pre.linear and pre.linear.test_top1, linear_random=rnd.linear and rnd.linear.test_top1,
            knn_pretrained=pre.knn and pre.knn.top1, knn_random=rnd.knn and rnd.knn.top1))
    return rows


def format_comparison_table(rows: list[ProbeComparison]) -> str:
    """Plain-text table of test top-1 (%): method | pool | linear (pretrained, random, gain) |
    k-NN (pretrained, random, gain). Gains are signed points."""
    header = ["method", "pool", "linear pretrained", "linear random", "linear gain",
              "k-NN pretrained", "k-NN random", "k-NN gain"]
    def num(value, spec=".2f"):
        return "-" if value is None else format(value, spec)

    body = [[r.method or "-", r.pool, num(r.linear_pretrained), num(r.linear_random), num(r.linear_gain, "+.2f"),
             num(r.knn_pretrained), num(r.knn_random), num(r.knn_gain, "+.2f")] for r in rows]
    return text_table("test top-1 (%), pretrained vs the same architecture at random init", header, body)


def text_table(title: str, header: list[str], body: list[list[str]], left_columns: int = 2) -> str:
    """title, header, a rule and body rows; the first `left_columns` columns left-aligned, the rest right."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line):
        cells = [c.ljust(w) if i < left_columns else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([title, fmt(header), rule, *map(fmt, body)])
