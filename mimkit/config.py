"""Typed run configuration from presets, YAML files and `key=value` overrides, checked strictly.

A run is `RunConfig(method, model, data, optim, train)` (defined with the method table in
mimkit.registry); `model` is the method's own config dataclass. Every unknown or ill-typed key
raises ConfigError naming the key and the valid ones.
"""
from pathlib import Path
from typing import Any

import yaml

from .config_schema import coerce, from_dict, to_dict  # noqa: F401 (re-exported)
from .errors import ConfigError
from .registry import RESUMED_CHANGES, RunConfig, run_config_from_dict  # noqa: F401 (re-exported)


def check_image_size(config: RunConfig) -> None:
    """For training: the model's img_size (when it has one) must be the side data.image_size gives
    the images (a config may hold other sizes, e.g. a model evaluated at another resolution)."""
    img_size = getattr(config.model, "img_size", None)
    if img_size is None:
        return
    sizes = list(img_size) if isinstance(img_size, (tuple, list)) else [img_size, img_size]
    side = config.data.image_size
    if sizes != [side, side]:
        raise ConfigError(f"data.image_size={side} but model.img_size={img_size}: the model is fed "
                          "data.image_size images; set both to the same value")


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
