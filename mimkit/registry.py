"""Floor 4, the one way in: the method table, run configs, building a model from a config and
loading one from a run folder, checkpoint or save_pretrained folder.

    register_method(MyMethod, presets={...}, descriptions={...})   # adds a method (or tokenizer)
    build_model("mae", MAEConfig(...))                             # an untrained model
    model, config = load_model("runs/mae")                         # weights + the RunConfig
    model = from_pretrained("exports/mae")                         # the model alone (any method)
    MAE.from_pretrained("exports/mae")                             # the same, checked to be an MAE

A method is a mimkit.methods.base.Method subclass naming its `method_name` and `config_class`;
the built-in methods and tokenizers are registered on first use of the table.
"""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config_schema import from_dict
from .data.config import DataConfig
from .engine.config import OptimConfig, TrainConfig
from .errors import ConfigError
from .files.checkpoint_folder import load_weights, read_config, resolve_checkpoint
from .files.pretrained_folder import resolve_pretrained
from .methods.base import Method
from .tokenizers.table import register_tokenizer


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its module class, its config dataclass, its presets and their descriptions."""

    model_class: type
    config_class: type
    presets: dict
    descriptions: dict


_TABLE: dict[str, MethodEntry] = {}


def register_method(model_class: type, presets: dict | None = None, descriptions: dict | None = None) -> None:
    """Add `model_class` (a Method subclass with method_name and config_class) to the table, with
    its presets (name -> run-config tree) and their one-line descriptions (name -> text)."""
    if not (isinstance(model_class, type) and issubclass(model_class, Method)):
        raise ConfigError(f"{model_class!r} is not a mimkit.methods.base.Method subclass")
    name, config_class = model_class.method_name, model_class.config_class
    if not name or not dataclasses.is_dataclass(config_class):
        raise ConfigError(f"{model_class.__name__} must set method_name and config_class (a dataclass)")
    presets, descriptions = dict(presets or {}), dict(descriptions or {})
    undescribed = sorted(set(presets) - set(descriptions))
    if undescribed:
        raise ConfigError(f"preset {undescribed[0]!r} of {name} has no description")
    taken = {p for other, entry in _TABLE.items() if other != name for p in entry.presets} & set(presets)
    if taken:
        raise ConfigError(f"preset name {sorted(taken)[0]!r} is already used by another method")
    _TABLE[name] = MethodEntry(model_class, config_class, presets, descriptions)
    if model_class.is_tokenizer:  # token models can then be trained over it
        register_tokenizer(model_class)


def _register_builtins() -> None:
    from .methods import beitv2, classifier, mae, mage, maskgit, revcolv2
    from .tokenizers import maskgit_vqgan, vqgan, vqkd

    for module, model_class in ((mae, mae.MAE), (vqgan, vqgan.VQGAN), (maskgit_vqgan, maskgit_vqgan.MaskGITVQGAN),
                                (vqkd, vqkd.VQKD), (maskgit, maskgit.MaskGIT),
                                (mage, mage.MAGE), (revcolv2, revcolv2.RevColV2), (beitv2, beitv2.BEiTv2),
                                (classifier, classifier.Classifier)):
        if model_class.method_name not in _TABLE:
            register_method(model_class, module.PRESETS, module.DESCRIPTIONS)


def method_registry() -> dict[str, MethodEntry]:
    """name -> MethodEntry for every method mimkit knows (built-ins and registered ones)."""
    _register_builtins()
    return dict(_TABLE)


def method_entry(name: str) -> MethodEntry:
    registry = method_registry()
    if name not in registry:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(registry))}")
    return registry[name]


def tokenizer_registry() -> dict[str, MethodEntry]:
    """The image tokenizers of the table (is_tokenizer): what token models can be trained over."""
    return {name: entry for name, entry in method_registry().items() if entry.model_class.is_tokenizer}


def build_model(method: str, model_config) -> Method:
    """The nn.Module of `method` built from its config dataclass."""
    return method_entry(method).model_class(model_config)


# ------------------------------------------------------------------ run configs
@dataclass
class RunConfig:
    """Everything a training run needs; `config.json` of a checkpoint is `to_dict` of this."""

    method: str = "mae"
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# config.json of a resumed run may also hold the record of the changes allowed on resume
# (mimkit.engine.resume_check); it describes the run's history, not its config
RESUMED_CHANGES = "resumed_changes"


def run_config_from_dict(values: dict) -> RunConfig:
    """A nested dict (preset, YAML, config.json) -> RunConfig with the method's model config
    (a config.json's RESUMED_CHANGES record is accepted and left out)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(values).__name__}")
    unknown = set(values) - {f.name for f in dataclasses.fields(RunConfig)} - {RESUMED_CHANGES}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}; valid keys: method, model, data, optim, train")
    method = values.get("method", "mae")
    if not isinstance(method, str):
        raise ConfigError(f"method must be a method name (a string), got {method!r}")
    entry = method_entry(method)
    return RunConfig(
        method=method,
        model=from_dict(entry.config_class, values.get("model", {}) or {}, "model"),
        data=from_dict(DataConfig, values.get("data", {}) or {}, "data"),
        optim=from_dict(OptimConfig, values.get("optim", {}) or {}, "optim"),
        train=from_dict(TrainConfig, values.get("train", {}) or {}, "train"),
    )


# ------------------------------------------------------------------ loading
def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Method, RunConfig]:
    """A checkpoint folder, run folder (its latest checkpoint), model.safetensors or save_pretrained
    folder -> (model in eval mode, RunConfig); weights verified and loaded strictly."""
    ckpt_dir = resolve_checkpoint(path)
    config = run_config_from_dict(read_config(ckpt_dir))
    model = build_model(config.method, config.model)
    load_weights(model, ckpt_dir)
    return model.to(device).eval(), config


def from_pretrained(path_or_repo_id: str | Path, device: str | torch.device = "cpu") -> Method:
    """The model of a save_pretrained folder (or run folder / checkpoint / locally cached Hugging
    Face repo), in eval mode, whatever its method."""
    model, _ = load_model(resolve_pretrained(path_or_repo_id), device=device)
    return model


def save_pretrained(model: Method, directory: str | Path, run: str | Path | None = None) -> Path:
    """`model.save_pretrained(directory, run)` for a registered method's model (CheckpointError
    for any other module): weights, config.json, model card, checksums."""
    from .errors import CheckpointError

    model = getattr(getattr(model, "_orig_mod", model), "module", model)  # compiled / DDP wrappers
    if not isinstance(model, Method) or model.method_name not in method_registry():
        raise CheckpointError(f"{type(model).__name__} is not a registered mimkit method; save_pretrained needs one "
                              f"of {', '.join(sorted(method_registry()))}")
    return model.save_pretrained(directory, run)
