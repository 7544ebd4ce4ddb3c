"""The optimisation and training sections of a run configuration."""
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class OptimConfig:
    """AdamW with per-step linear warmup then half-cosine decay to min_lr.

    lr: absolute peak learning rate; when 0 it is blr * effective_batch / 256 (MAE's rule).
    clip_grad: max global gradient norm (0 = no clipping).
    """

    blr: float = 1.5e-4
    lr: float = 0.0
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 0
    clip_grad: float = 0.0

    def validate(self, prefix: str = "optim") -> None:
        for name in ("blr", "lr", "min_lr", "weight_decay", "eps", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{prefix}.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{prefix}.betas must lie in [0, 1), got {list(self.betas)}")


@dataclass
class TrainConfig:
    """How long, how big and where a run goes.

    steps: optimizer steps; batch_size: per-process micro-batch; accum_steps: micro-batches per step.
    device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    precision: "fp32" or "bf16" (autocast; for GPUs - slower than fp32 on most CPUs).
    out_dir: run folder (checkpoints/, log.csv, pictures/). ckpt_every/log_every/picture_every: in steps (0 = off).
    max_nonfinite_steps: consecutive non-finite-loss steps (each skipped, no update) before training stops.
    overwrite: a fresh (not --resume) run into an out_dir that already holds checkpoints replaces them
               when true; when false (default) it is refused, so no run is lost by accident.
    fsdp: under torchrun, shard parameters, gradients and optimizer state over the processes with
          FSDP2 (fully_shard per transformer block) instead of DDP's full copy per process.
    """

    steps: int = 1000
    batch_size: int = 64
    accum_steps: int = 1
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    out_dir: str = "runs/run"
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    picture_every: int = 0
    compile: bool = False
    threads: int = 0
    progress: bool = True
    max_nonfinite_steps: int = 20
    overwrite: bool = False
    fsdp: bool = False

    def validate(self, prefix: str = "train") -> None:
        for name in ("steps", "batch_size", "accum_steps", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ckpt_every", "log_every", "picture_every", "threads", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(self, name)}")
        if not self.out_dir.strip():
            raise ConfigError(f"{prefix}.out_dir is empty; give the run folder, e.g. {prefix}.out_dir=runs/my_run")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{prefix}.precision must be fp32 or bf16, got {self.precision!r}")
