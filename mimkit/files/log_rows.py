"""Reading a run's log.csv: the complete rows (a row cut short or garbled by a kill is left out)."""
import csv
from pathlib import Path


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(header, complete rows) of a log.csv; a row cut short (or garbled) by a kill is left out."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    return columns, [r for r in rows if None not in r and None not in r.values() and is_step(r.get("step"))]


def is_step(text: str | None) -> bool:
    try:
        return float(text).is_integer()
    except (TypeError, ValueError):
        return False
