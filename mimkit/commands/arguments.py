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


def int_in(low: int, high: int):
    """argparse type: an integer in [low, high] (bounds keep huge values from reaching torch as overflows)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            what = ("a positive integer" if low == 1 else f"an integer >= {low}") if high == MAX_COUNT else \
                f"an integer in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


MAX_COUNT = 2**31 - 1  # images, batch sizes, steps
positive_int = int_in(1, MAX_COUNT)
non_negative_int = int_in(0, MAX_COUNT)
seed_int = int_in(0, 2**63 - 1)  # what torch.Generator.manual_seed takes
thread_count = int_in(0, 1024)
picture_scale = int_in(1, 64)  # pixel enlargement of pictures (64 x 28 px is already 1.8k px per cell)
