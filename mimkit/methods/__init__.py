"""Floor 3: one module per seed system. Each is an nn.Module built from its config dataclass with
`forward(**batch) -> Output` (loss + logs) and `features(images, pool) -> (N, D)` for probes."""
from dataclasses import dataclass

from ..errors import ConfigError
from .output import Output


@dataclass(frozen=True)
class MethodEntry:
    """How to build a method: its module class, its config dataclass and its named presets."""

    model_class: type
    config_class: type
    presets: dict


def method_registry() -> dict[str, MethodEntry]:
    """name -> MethodEntry for every method mimkit knows."""
    from ..tokenizers import vqgan, vqkd
    from . import beitv2, classifier, mae, mage, maskgit, revcolv2

    return {"mae": MethodEntry(mae.MAE, mae.MAEConfig, mae.PRESETS),
            "vqgan": MethodEntry(vqgan.VQGAN, vqgan.VQGANConfig, vqgan.PRESETS),
            "vqkd": MethodEntry(vqkd.VQKD, vqkd.VQKDConfig, vqkd.PRESETS),
            "maskgit": MethodEntry(maskgit.MaskGIT, maskgit.MaskGITConfig, maskgit.PRESETS),
            "mage": MethodEntry(mage.MAGE, mage.MAGEConfig, mage.PRESETS),
            "revcolv2": MethodEntry(revcolv2.RevColV2, revcolv2.RevColV2Config, revcolv2.PRESETS),
            "beitv2": MethodEntry(beitv2.BEiTv2, beitv2.BEiTv2Config, beitv2.PRESETS),
            "classifier": MethodEntry(classifier.Classifier, classifier.ClassifierConfig, classifier.PRESETS)}


def method_entry(name: str) -> MethodEntry:
    registry = method_registry()
    if name not in registry:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(registry))}")
    return registry[name]


def build_model(method: str, model_config):
    """The nn.Module of `method` built from its config dataclass."""
    return method_entry(method).model_class(model_config)


__all__ = ["Output", "MethodEntry", "method_registry", "method_entry", "build_model"]
