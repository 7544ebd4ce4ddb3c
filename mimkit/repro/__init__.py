"""`mimkit repro NAME`: each seed paper's central claim, reproduced at CPU scale on Fashion-MNIST.

Every reproduction is a module with `run(ctx: ReproContext) -> Report`: it trains (or reuses) the
small runs of its sweep, evaluates them, and returns the report that `run_repro` writes as
report.md + PNG plots + results.json. `--quick` shrinks every run to a smoke test of the whole
pipeline (about a minute); its numbers are not evidence and its report says so.
"""
import importlib
from pathlib import Path

from ..errors import ConfigError
from .context import ReproContext
from .report import Claim, Report

# name -> (module in mimkit.repro, what it shows)
REPROS = {
    "mae-mask-ratio": ("mae_mask_ratio", "MAE: linear probe vs mask ratio; random vs block vs grid masking"),
    "maskgit-schedules": ("maskgit_schedules", "MaskGIT: FID vs decoding steps for each mask schedule"),
    "mage-variable-ratio": ("mage_variable_ratio", "MAGE: fixed vs variable mask ratio, FID and linear probe"),
    "beitv2-tokenizer": ("beitv2_tokenizer", "BEiT v2: VQ-KD codebook usage, and probe vs a pixel target"),
    "revcol-memory": ("revcol_memory", "RevColV2: activation memory and gradient check vs columns"),
}


def default_out(name: str, quick: bool) -> Path:
    """docs/repro/NAME for a full run (where the committed reports live); quick runs stay under runs/."""
    return Path("runs/repro-quick") / name / "report" if quick else Path("docs/repro") / name


def run_repro(name: str, *, out: str | Path | None = None, work: str | Path | None = None, quick: bool = False,
              threads: int = 0, progress: bool = True) -> Path:
    """Run one reproduction and write its report; returns the path of report.md."""
    if name not in REPROS:
        raise ConfigError(f"unknown reproduction {name!r}; choose one of {', '.join(REPROS)}")
    module = importlib.import_module(f".{REPROS[name][0]}", __name__)
    work = Path(work) if work else Path("runs/repro-quick" if quick else "runs/repro")
    ctx = ReproContext(name=name, out=Path(out) if out else default_out(name, quick), work=work, quick=quick,
                       threads=threads, progress=progress)
    report = module.run(ctx)
    reused = set(ctx.reused)
    report.reused_runs, report.reused_minutes = len(reused), sum(map(ctx.train_minutes, reused))
    return report.write(ctx.out)


__all__ = ["REPROS", "Claim", "Report", "ReproContext", "default_out", "run_repro"]
