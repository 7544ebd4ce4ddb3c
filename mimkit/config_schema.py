"""Typed dataclass configs from plain dicts (YAML / JSON) and back, checked strictly.

Floor 0 (beside errors.py): every floor builds its config dataclasses with `from_dict`, so a
method can build the config of a sub-model (e.g. MaskGIT's frozen tokenizer) without importing
the CLI-facing `mimkit.config`.
"""
import dataclasses
import types
import typing
from typing import Any

from .errors import ConfigError


SCALARS = {  # type -> (accepts a YAML/JSON value, converts it, what the error says the value must be)
    bool: (lambda v: isinstance(v, bool), bool, "true or false"),
    int: (lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
          int, "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float, "a number"),
    str: (lambda v: isinstance(v, str), str, "a string"),
    dict: (lambda v: isinstance(v, dict), dict, "a mapping"),
}


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
    scalar = SCALARS.get(dict if origin is dict else tp)
    if scalar is not None:
        accepts, convert, what = scalar
        if accepts(value):
            return convert(value)
        raise ConfigError(f"{key} must be {what}, got {value!r}")
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
