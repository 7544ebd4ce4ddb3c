"""What every reproduction shares: where runs go, training a run once and reusing it, the
evaluation splits, and the random-init baseline of a probe.

Runs of a reproduction live in `work/NAME/RUN` (default work: runs/repro, quick mode: runs/repro-quick);
prerequisites several reproductions need (a VQGAN, a feature network, an MAE teacher) live in
`work/shared/RUN`, so the second reproduction that needs them does not train them again. A run is
reused when its last checkpoint was made from exactly the same config by the same mimkit code
(`code_fingerprint`: a hash of the package's source files, so a report re-run after a code change
never mixes runs of old and new code); a run with the same config and code that stopped early is
resumed; anything else is retrained from scratch.
"""
import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError

REQUEST_FILE = "repro_request.json"
SECONDS_FILE = "repro_train_seconds.txt"


@dataclass
class ReproContext:
    """name: the reproduction (its runs go to work/name); out: where the report goes;
    quick: the smoke-test sizes; threads: torch CPU threads for training and evaluation."""

    name: str
    out: Path
    work: Path
    quick: bool = False
    threads: int = 0
    progress: bool = True
    seed: int = 0

    def __post_init__(self):
        self.out, self.work = Path(self.out), Path(self.work)
        self.reused: list[Path] = []  # runs an earlier invocation trained
        if self.threads:
            torch.set_num_threads(self.threads)

    def run_dir(self, run: str, shared: bool = False) -> Path:
        return self.work / ("shared" if shared else self.name) / run

    def log(self, message: str) -> None:
        print(f"[repro {self.name}] {message}", flush=True)

    def train(self, preset: str, overrides: list[str], run: str, shared: bool = False) -> Path:
        """Train `preset` with `overrides` into work/(name|shared)/run, or reuse/resume a run made
        from the same config; returns the run folder."""
        from ..config import check_image_size, load_config, to_dict
        from ..files.checkpoint_folder import latest_checkpoint
        from ..train import train

        out = self.run_dir(run, shared)
        settings = [*overrides, f"train.out_dir={out}", f"train.progress={str(self.progress).lower()}",
                    f"train.threads={self.threads}", f"train.seed={self.seed}"]
        config = load_config(preset, settings)
        check_image_size(config)
        wanted = {**comparable(to_dict(config)), "code": code_fingerprint()}
        request = out / REQUEST_FILE  # the config this folder's run was asked for (the saved config.json
        done = latest_checkpoint(out)  # is the resolved one: tokenizer configs filled in, etc.)
        if done is not None and request.is_file() and json.loads(request.read_text()) == wanted:
            step = int(done.name.removeprefix("step_"))
            if step >= config.train.steps:
                self.log(f"reusing {out} ({step} steps, same config)")
                self.reused.append(out)
                return out
            if latest_checkpoint(out, need_state=True) is not None:
                self.log(f"resuming {out} from step {step}")
                return timed(out, lambda: train(config, resume=True))
        self.log(f"training {preset} -> {out} ({config.train.steps} steps)")
        out.mkdir(parents=True, exist_ok=True)
        request.write_text(json.dumps(wanted, indent=1))
        (out / SECONDS_FILE).unlink(missing_ok=True)
        return timed(out, lambda: train(replace(config, train=replace(config.train, overwrite=True))))

    @staticmethod
    def train_minutes(run_dir: Path) -> float:
        """Wall minutes `train` spent on this run over all invocations (0 if unknown)."""
        file = Path(run_dir) / SECONDS_FILE
        return float(file.read_text()) / 60 if file.is_file() else 0.0

    def splits(self, train_limit: int, test_limit: int, image_size: int = 28):
        """Fashion-MNIST (train, test) at image_size, un-augmented, seeded class-stratified subsets of
        *_limit images (data.limit; 0 = all)."""
        return self.split("train", train_limit, image_size), self.split("test", test_limit, image_size)

    @staticmethod
    def split(name: str, limit: int, image_size: int = 28):
        """One Fashion-MNIST split ("train" / "test") at image_size, un-augmented, a seeded
        class-stratified subset of `limit` images (0 = all)."""
        from ..data import build_dataset
        from ..data.config import DataConfig

        cfg = DataConfig(name="fashion-mnist", split=name, augment=False, limit=limit, image_size=image_size)
        return build_dataset(cfg, channels=1, split=name)


def timed(run_dir: Path, work) -> Path:
    """Run work() and add its wall seconds to run_dir's SECONDS_FILE (a resumed run adds up)."""
    started = time.time()
    result = work()
    file = run_dir / SECONDS_FILE
    before = float(file.read_text()) if file.is_file() else 0.0
    file.write_text(f"{before + time.time() - started:.1f}\n")
    return result


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the path and bytes of every .py file of the mimkit package (sorted): what trained a run."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py")):
        digest.update(str(file.relative_to(package)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def comparable(config: dict) -> dict:
    """A config dict without the fields that do not change what a run computes."""
    config = json.loads(json.dumps(config))
    for key in ("progress", "threads", "overwrite", "out_dir", "log_every", "ckpt_every", "keep_checkpoints",
                "picture_every"):
        config.get("train", {}).pop(key, None)
    config.get("data", {}).pop("num_workers", None)
    return config


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
