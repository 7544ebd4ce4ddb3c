"""Named run presets: every method's paper recipes and CPU-sized runs, as nested dicts.

Each method module holds PRESETS (name -> the config tree `mimkit train NAME` starts from) and,
beside it, DESCRIPTIONS (name -> one line: the paper recipe it follows, or which CPU-sized run it
is and what it measured); both are registered with the method (mimkit.registry.register_method,
which refuses a preset without a description). The descriptions stay out of the config trees,
which `run_config_from_dict` checks strictly.
"""
import copy

from .errors import ConfigError
from .registry import method_registry


def all_presets() -> dict[str, dict]:
    """preset name -> nested config dict (method, model, data, optim, train)."""
    return {name: tree for entry in method_registry().values() for name, tree in entry.presets.items()}


def preset_descriptions() -> dict[str, str]:
    """preset name -> its one-line description."""
    return {name: text for entry in method_registry().values() for name, text in entry.descriptions.items()}


def preset_dict(name: str) -> dict:
    """A deep copy of preset `name`, or ConfigError listing the known presets."""
    table = all_presets()
    if name not in table:
        raise ConfigError(f"unknown preset {name!r} (not a .yaml file either); presets: {', '.join(sorted(table))}")
    return copy.deepcopy(table[name])
