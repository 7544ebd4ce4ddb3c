"""Training logs: a CSV file (always) and TensorBoard (when installed)."""
import csv
import io
import math
from pathlib import Path

from ..files.atomic import write_text_atomic
from ..files.log_rows import read_rows


def cell(value):
    """A logged value as written: ints (counts) stay ints, strings stay, the rest (tensors, numpy
    scalars, floats) become floats."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    return float(value)


class RunLog:
    """Append rows of scalars to RUN/log.csv (columns fixed by the first row) and to TensorBoard.

    On resume, rows logged after the resumed step (a killed run logs steps past its last
    checkpoint) and rows cut short by a kill are dropped, so the file holds each step once and
    reads like one run. Whole-file rewrites go through a temporary file and os.replace.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / "log.csv"
        self.columns: list[str] | None = None
        if resume_step is not None and self.path.is_file():
            columns, rows = read_rows(self.path)
            if columns:
                self.columns = columns
                self.write_all([r for r in rows if int(float(r["step"])) <= resume_step])
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.writer = None

    def write_all(self, rows: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())

    def log(self, step: int, values: dict[str, float | int]) -> None:
        row = {"step": step, **{k: cell(v) for k, v in values.items()}}
        if self.columns is None:
            self.columns = list(row.keys())
            self.write_all([])
        extra = [k for k in row if k not in self.columns]
        if extra:  # a new column appears: rewrite the file with it
            rows = read_rows(self.path)[1]
            self.columns += extra
            self.write_all(rows)
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
