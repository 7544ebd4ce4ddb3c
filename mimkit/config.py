"""Typed run configuration: presets, YAML files and `key=value` overrides, checked strictly.

A run is `RunConfig(method, model, data, optim, train)`; `model` is the method's own config
dataclass. Every unknown or ill-typed key raises ConfigError naming the key and the valid ones.
"""
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.config import DataConfig
from .engine.config import OptimConfig, TrainConfig
from .errors import ConfigError


@dataclass
class RunConfig:
    """Everything a training run needs; `config.json` of a checkpoint is `to_dict` of this."""

    method: str = "mae"
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/JSON value to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[float, ...]: any length
            if not isinstance(value, (list, tuple)):
                value = [value]
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; valid keys: {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{prefix or 'config'}: {err}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (tuples become lists), ready for JSON/YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def run_config_from_dict(values: dict) -> RunConfig:
    """A nested dict (preset, YAML, config.json) -> RunConfig with the method's model config."""
    from .methods import method_entry

    if not isinstance(values, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(values).__name__}")
    unknown = set(values) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}; valid keys: method, model, data, optim, train")
    method = values.get("method", "mae")
    entry = method_entry(method)
    return RunConfig(
        method=method,
        model=from_dict(entry.config_class, values.get("model", {}) or {}, "model"),
        data=from_dict(DataConfig, values.get("data", {}) or {}, "data"),
        optim=from_dict(OptimConfig, values.get("optim", {}) or {}, "optim"),
        train=from_dict(TrainConfig, values.get("train", {}) or {}, "train"),
    )


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """tree["a"]["b"] = value for dotted = "a.b", creating the intermediate mappings."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.blr=1e-3' -> ('optim.blr', 0.001); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.steps=100)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string; numbers in scientific notation are numbers here
            value = float(raw)
        except ValueError:
            pass
    return key.strip(), value


def load_config(preset_or_yaml: str, overrides: list[str] = ()) -> RunConfig:
    """A preset name or a YAML file, then `key=value` overrides -> a checked RunConfig."""
    from .presets import preset_dict

    path = Path(preset_or_yaml)
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (method, model, data, optim, train)")
    else:
        tree = preset_dict(preset_or_yaml)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    return run_config_from_dict(tree)
