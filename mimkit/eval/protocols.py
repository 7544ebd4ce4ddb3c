"""The probe protocols by name, for the command line and scripts: each is a
mimkit.eval.comparison.ProbeProtocol that compare_with_random_init runs on both models."""
from .comparison import ProbeProtocol
from .fewshot import FewShot
from .finetune import FineTune
from .layerwise import Layerwise
from .report import FrozenProbes


def make_protocol(name: str, **options) -> ProbeProtocol:
    """The protocol named `name` with its options: "linear", "knn", "probes" (both) -> FrozenProbes
    (batch_size, device, linear_kwargs, knn_kwargs, progress); "fewshot" -> FewShot (shots, seeds,
    C, max_iter, batch_size, device, progress); "layerwise" -> Layerwise (batch_size, device,
    linear_kwargs, progress); "finetune" -> FineTune (trainable_blocks and `finetune`'s recipe)."""
    if name in ("linear", "knn", "probes"):
        return FrozenProbes(probes=("linear", "knn") if name == "probes" else (name,), **options)
    protocols = {"fewshot": FewShot, "layerwise": Layerwise, "finetune": FineTune}
    if name not in protocols:
        raise ValueError(f"unknown protocol {name!r}; protocols are linear, knn, probes, {', '.join(protocols)}")
    return protocols[name](**options)


