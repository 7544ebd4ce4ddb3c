"""Training logs: a CSV file (always) and TensorBoard (when installed)."""
import csv
import math
from pathlib import Path


class RunLog:
    """Append rows of scalars to RUN/log.csv (columns fixed by the first row) and to TensorBoard.

    On resume, rows logged after the resumed step are dropped so the file reads like one run.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / "log.csv"
        self.columns: list[str] | None = None
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            if rows:
                self.columns = list(rows[0].keys())
                kept = [r for r in rows if int(float(r["step"])) <= resume_step]
                self.write_all(kept)
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
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: (float(v) if not isinstance(v, str) else v) for k, v in values.items()}}
        if self.columns is None:
            self.columns = list(row.keys())
            self.write_all([])
        extra = [k for k in row if k not in self.columns]
        if extra:  # a new column appears: rewrite the file with it
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.columns += extra
            self.write_all(rows)
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
