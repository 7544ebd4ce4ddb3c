"""How long each stage of a reproduction took, for its setup paragraph: this invocation's wall
minutes, whether an earlier invocation made the run, and how long making it took then."""
import time
from pathlib import Path

from .context import ReproContext


def timed_train(ctx: ReproContext, preset: str, overrides: list[str], run: str,
                shared: bool = False) -> tuple[Path, dict]:
    """ctx.train(...) -> (run folder, its `stage_info`)."""
    started, before = time.time(), len(ctx.reused)
    out = ctx.train(preset, overrides, run, shared=shared)
    return out, stage_info(ctx, out, started, reused=len(ctx.reused) > before)  # ctx.train lists reused runs


def stage_info(ctx: ReproContext, folder: Path, started: float, reused: bool) -> dict:
    """{"minutes": wall minutes since `started`, "reused": whether an earlier invocation made
    `folder`, "made_minutes": the wall minutes making it took (ctx.train_minutes; 0 = not recorded)}."""
    return {"minutes": round((time.time() - started) / 60, 2), "reused": reused,
            "made_minutes": round(ctx.train_minutes(folder), 3)}


def stage_text(info: dict) -> str:
    """"3.2 min", or "reused; made in 3.2 min by an earlier run" for a `stage_info` dict."""
    if not info["reused"]:
        return f"{info['minutes']:.1f} min"
    made = info.get("made_minutes")
    return "reused" + (f"; made in {made:.1f} min by an earlier run" if made else "")


def fresh_minutes(stages: dict) -> float:
    """Wall minutes of the whole pipeline from scratch: reused stages count the time making them took."""
    return sum(info["made_minutes"] if info["reused"] and info.get("made_minutes") else info["minutes"]
               for info in stages.values())
