"""The frozen-feature probes (linear and k-NN) of one model, the random-init baseline of a model,
and the probes as a protocol of `mimkit.eval.comparison` (pretrained vs random init, side by side).
"""
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .comparison import ProbeProtocol, number
from .features import extract_split_features
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
    from ..registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_model(config.method, config.model).eval()
    if getattr(model, "frozen_tokenizer", False):  # the capability of mimkit.methods.base.Method
        fresh.tokenizer.load_state_dict(model.tokenizer.state_dict())
    return fresh


def check_probes(probes) -> None:
    """ValueError naming a probe other than linear and knn."""
    unknown = set(probes) - {"linear", "knn"}
    if unknown:
        raise ValueError(f"unknown probe {sorted(unknown)[0]!r}; probes are linear and knn")


def probe_model(model: nn.Module, train_set, test_set, *, pool: str = "cls", batch_size: int = 512,
                device=None, linear_kwargs: dict | None = None, knn_kwargs: dict | None = None,
                progress: bool = True, probes=("linear", "knn")) -> ProbeReport:
    """Extract frozen features of both splits once, then run the linear probe and/or the k-NN.

    linear_kwargs / knn_kwargs are passed to `linear_probe` / `knn_accuracy` (e.g. epochs, k);
    `probes` names which of the two to run (the other is None in the report).
    """
    check_probes(probes)
    train, test = extract_split_features(model, train_set, test_set, pool=pool, batch_size=batch_size, device=device,
                                         progress=progress)
    linear = linear_probe(*train, *test, progress=progress, **(linear_kwargs or {})) if "linear" in probes else None
    knn = knn_accuracy(*train, *test, progress=progress, **(knn_kwargs or {})) if "knn" in probes else None
    return ProbeReport(pool=pool, linear=linear, knn=knn)


class FrozenProbes(ProbeProtocol):
    """The linear probe and / or the weighted k-NN on frozen features (`probe_model`): one row per
    pool with both probes' top-1 of either model. `probes` names which to run; linear_kwargs /
    knn_kwargs go to `linear_probe` / `knn_accuracy` (e.g. epochs, seed, k)."""

    columns = ("linear pretrained", "linear random", "linear gain", "k-NN pretrained", "k-NN random", "k-NN gain")

    def __init__(self, probes=("linear", "knn"), *, batch_size: int = 512, device=None,
                 linear_kwargs: dict | None = None, knn_kwargs: dict | None = None, progress: bool = True):
        self.probes, self.batch_size, self.device, self.progress = tuple(probes), batch_size, device, progress
        self.linear_kwargs, self.knn_kwargs = linear_kwargs, knn_kwargs
        check_probes(self.probes)

    def run(self, model, train_set, test_set, pool: str) -> list[ProbeReport]:
        return [probe_model(model, train_set, test_set, pool=pool, batch_size=self.batch_size, device=self.device,
                            linear_kwargs=self.linear_kwargs, knn_kwargs=self.knn_kwargs, progress=self.progress,
                            probes=self.probes)]

    def row(self, method: str, pool: str, pretrained: ProbeReport, random: ProbeReport) -> ProbeComparison:
        return ProbeComparison(
            method=method, pool=pool,
            linear_pretrained=pretrained.linear and pretrained.linear.test_top1,
            linear_random=random.linear and random.linear.test_top1,
            knn_pretrained=pretrained.knn and pretrained.knn.top1, knn_random=random.knn and random.knn.top1)

    def cells(self, row: ProbeComparison) -> list[str]:
        return [number(row.linear_pretrained), number(row.linear_random), number(row.linear_gain, "+.2f"),
                number(row.knn_pretrained), number(row.knn_random), number(row.knn_gain, "+.2f")]

    def title(self, rows: list) -> str:
        return "test top-1 (%), pretrained vs the same architecture at random init"
