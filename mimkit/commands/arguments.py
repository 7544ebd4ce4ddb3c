"""argparse types shared by the commands: numbers checked on parsing, so a bad value is a usage error."""
import argparse
import math


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, lambda v: v >= 0, "a number >= 0")


def unit_interval(open_low: bool = False, open_high: bool = False):
    """argparse type: a number in [0, 1] with either end open."""
    low, high = "(" if open_low else "[", ")" if open_high else "]"
    return lambda text: _number(text, lambda v: (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1),
                                f"a number in {low}0, 1{high}")


def _number(text: str, ok, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value
