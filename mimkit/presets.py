"""Named run presets: every method's paper recipes and CPU-sized runs, as nested dicts."""
import copy

from .errors import ConfigError


def all_presets() -> dict[str, dict]:
    """preset name -> nested config dict (method, model, data, optim, train)."""
    from .methods import method_registry

    table = {}
    for entry in method_registry().values():
        table.update(entry.presets)
    return table


def preset_dict(name: str) -> dict:
    """A deep copy of preset `name`, or ConfigError listing the known presets."""
    table = all_presets()
    if name not in table:
        raise ConfigError(f"unknown preset {name!r} (not a .yaml file either); presets: {', '.join(sorted(table))}")
    return copy.deepcopy(table[name])
