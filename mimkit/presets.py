"""Named run presets: every method's paper recipes and CPU-sized runs, as nested dicts.

Each method module holds PRESETS (name -> the config tree `mimkit train NAME` starts from) and,
beside it, DESCRIPTIONS (name -> one line: the paper recipe it follows, or which CPU-sized run it
is and what it measured). The descriptions stay out of the config trees, which
`mimkit.config.run_config_from_dict` checks strictly.
"""
import copy
import importlib

from .errors import ConfigError


def all_presets() -> dict[str, dict]:
    """preset name -> nested config dict (method, model, data, optim, train)."""
    from .methods import method_registry

    table = {}
    for entry in method_registry().values():
        table.update(entry.presets)
    return table


def preset_descriptions() -> dict[str, str]:
    """preset name -> its one-line description, from the DESCRIPTIONS dict beside each registered
    method's PRESETS (a module without one contributes nothing)."""
    from .methods import method_registry

    table = {}
    for entry in method_registry().values():
        module = importlib.import_module(entry.config_class.__module__)
        table.update(getattr(module, "DESCRIPTIONS", {}))
    return table


def preset_dict(name: str) -> dict:
    """A deep copy of preset `name`, or ConfigError listing the known presets."""
    table = all_presets()
    if name not in table:
        raise ConfigError(f"unknown preset {name!r} (not a .yaml file either); presets: {', '.join(sorted(table))}")
    return copy.deepcopy(table[name])
