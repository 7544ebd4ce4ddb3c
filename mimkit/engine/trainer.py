"""One Trainer for every method: any nn.Module whose forward(**batch) returns an Output(loss, logs).

    trainer = Trainer(model, run_config, dataset, augment=augment)
    trainer.fit()              # or fit(resume=True) to continue from RUN/checkpoints/latest

It owns the optimiser (AdamW, MAE param groups, lr = blr * effective batch / 256), the per-step
warmup + half-cosine schedule, gradient accumulation and clipping, device and bf16 autocast,
seeding, atomic checkpoints with everything needed for an exact resume, CSV/TensorBoard logs, a
progress bar and periodic callbacks.

Non-finite losses: a step whose loss (or, with clipping, gradient norm) is NaN/inf is skipped -
no optimizer update, gradients dropped - and counted (log column `nonfinite_steps`, the total so
far); after train.max_nonfinite_steps such steps in a row, TrainingError names the step and the
last good checkpoint (the weights are never touched by a bad step, so that checkpoint is sound).
Run folder (mimkit.engine.run_dir): checked writable before anything is written; a fresh run into
a folder holding checkpoints is refused unless train.overwrite; a fresh run that fails before its
first checkpoint removes the folder it created.

Resume (mimkit.engine.resume_check): refused without a resumable checkpoint, a no-op (said so)
when the checkpoint is at train.steps already, refused when the recipe or the computed peak lr
differs from the checkpoint's unless fit(allow_change=...) names the keys; allowed changes are
recorded in every later checkpoint's config.json ("resumed_changes").

Skipped images (data.on_error=skip): logged and saved as the number of distinct files skipped so
far over all ranks; RUN/skipped_images.txt lists them.

Distributed (mimkit.engine.distributed): under `torchrun --nproc_per_node=N` every process joins
the group from torchrun's environment and trains a DDP-wrapped model on its own disjoint shard
of the same global permutation. train.batch_size is per process, so the global batch is
batch_size * WORLD_SIZE * accum_steps (the lr rule uses it). Masking/augmentation seeds are
rank-offset (seed + rank); the model's init is not (train() seeds it before the Trainer, and
DDP broadcasts rank 0's weights anyway). Logged metrics are averaged over ranks; rank 0 alone
writes checkpoints (with every rank's RNG state, for an exact resume at the same world size),
logs, pictures and the progress bar. train.fsdp=true shards the model with FSDP2 instead
(fully_shard per transformer block); checkpoints then hold the gathered full weights and
optimizer state, so they load anywhere (single process, DDP, FSDP).
"""
import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..config_schema import to_dict
from ..registry import RESUMED_CHANGES, RunConfig
from ..errors import CheckpointError, ConfigError, TrainingError
from ..files.checkpoint_folder import latest_checkpoint, load_weights, read_config
from .checkpoint import load_trainer_state, save_checkpoint
from .device import autocast, pick_device
from .distributed import (all_ranks_true, barrier, full_model_state, full_optimizer_state, gather_objects,
                          init_distributed, load_full_optimizer_state, load_full_weights, mean_over_ranks, rank_device,
                          shard_fsdp, sum_over_ranks, wrap_ddp)
from .optim import build_adamw, scaled_lr, warmup_cosine
from .resume_check import (allowed_keys, check_peak_lr, check_recipe, nothing_to_do, recorded_changes,
                           resumable_checkpoint)
from .rng import rng_state, seed_everything, set_rng_state
from .run_dir import check_writable_dir, refuse_or_clear_old_run, write_skipped
from .run_log import RunLog


class Trainer:
    """Trains `model` on batches drawn from `dataset` as `config.train` / `config.optim` say.

    model: nn.Module with forward(**batch) -> Output; dataset: items {"images", "labels"} (images
    uint8 or float in [0, 1]: the model always sees float, see mimkit.data.device_batch).
    augment: optional callable on the image batch (N, C, H, W), applied on the training device.
    callbacks: callables `callback(trainer, step)` run after each optimiser step.
    """

    def __init__(self, model: torch.nn.Module, config: RunConfig, dataset, augment: Callable | None = None,
                 callbacks: tuple = ()):
        from ..data.loader import make_loader

        self.config = config
        self.tc, self.oc = config.train, config.optim
        self.run_dir = Path(self.tc.out_dir)
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)
        self.dist = init_distributed(self.tc.device)
        seed_everything(self.tc.seed + self.dist.rank)  # per-rank masking/augmentation streams
        self.device = rank_device(pick_device(self.tc.device), self.dist)
        self.model = model.to(self.device)
        self.augment = augment  # None: the items are final (e.g. an image folder cropping its originals)
        contract = getattr(type(self.model), "input_views", None)  # a plain nn.Module sees one view
        self.views = contract(config.model) if contract is not None else 1
        self.callbacks = list(callbacks)
        self.effective_batch = self.tc.batch_size * self.tc.accum_steps * self.dist.world_size  # global batch
        self.peak_lr = self.oc.lr or scaled_lr(self.oc.blr, self.effective_batch)
        self.sharded = self.tc.fsdp
        if self.sharded:  # FSDP2 shards self.model in place; the optimizer then holds the shards
            self.ddp = shard_fsdp(self.model, self.dist)
        else:  # DDP wraps; the model itself in a single process
            self.ddp = wrap_ddp(self.model, self.device, self.dist)
        self.optimizer = build_adamw(self.model, self.peak_lr, self.oc.weight_decay, self.oc.betas, self.oc.eps)
        self.loader = make_loader(dataset, self.tc.batch_size, seed=self.tc.seed, num_workers=config.data.num_workers,
                                  rank=self.dist.rank, world_size=self.dist.world_size,
                                  pin_memory=self.device.type == "cuda")
        self.step = 0
        self.nonfinite_total = 0  # skipped steps so far
        self.nonfinite_run = 0  # skipped steps in a row, up to the current one
        self.skipped: dict[str, None] = {}  # distinct unreadable files skipped by any rank (an ordered set)
        self.skipped_shared = 0  # how many of self.loader.skipped_paths are in self.skipped
        self.resumed_changes: list[dict] = []  # config.json's record of the changes allowed on resume
        self.forward = torch.compile(self.ddp) if self.tc.compile else self.ddp

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything besides the weights that an exact resume needs (a collective under torchrun:
        every rank must call it, as save() does)."""
        optimizer = full_optimizer_state(self.model, self.optimizer) if self.sharded else self.optimizer.state_dict()
        skipped = self.sync_skipped()
        state = {"step": self.step, "optimizer": optimizer, "loader": self.loader.state_dict(),
                 "rng": rng_state(), "peak_lr": self.peak_lr,
                 "nonfinite": {"total": self.nonfinite_total, "run": self.nonfinite_run},
                 "skipped_images": skipped, "skipped_paths": list(self.skipped)}  # all ranks'
        if self.dist.enabled:  # per-rank streams and data positions, for an exact resume
            state["rng_ranks"] = gather_objects(state["rng"], self.dist)
            state["loader_ranks"] = gather_objects(state["loader"], self.dist)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        if self.sharded:
            load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        loaders = state.get("loader_ranks") or []
        same_world = self.dist.enabled and len(loaders) == self.dist.world_size
        self.loader.load_state_dict(loaders[self.dist.rank] if same_world else state["loader"])
        self.load_rng(state)
        nonfinite = state.get("nonfinite", {})  # absent in checkpoints of older versions
        self.nonfinite_total, self.nonfinite_run = int(nonfinite.get("total", 0)), int(nonfinite.get("run", 0))
        self.skipped = dict.fromkeys(state.get("skipped_paths", []))  # older checkpoints saved a count only

    def load_rng(self, state: dict) -> None:
        """This rank's saved RNG state; a run resumed at another world size gets fresh per-rank streams."""
        ranks = state.get("rng_ranks") or []
        if self.dist.enabled and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        elif self.dist.rank == 0:
            set_rng_state(state["rng"])
        else:
            seed_everything(self.tc.seed + self.dist.rank + self.dist.world_size * int(state["step"]))

    def sync_skipped(self) -> int:
        """The number of distinct unreadable files skipped so far by all ranks (a collective: every
        rank calls it at the same points; objects are gathered only when some rank met a new file)."""
        new = self.loader.skipped_paths[self.skipped_shared:]
        self.skipped_shared += len(new)
        if sum_over_ranks(len(new), self.dist, self.device):
            for paths in gather_objects(new, self.dist):
                self.skipped.update(dict.fromkeys(paths))
        return len(self.skipped)

    def config_record(self) -> dict:
        """config.json: the run config, with the record of the changes allowed on resume if any."""
        config = to_dict(self.config)
        if self.resumed_changes:
            config[RESUMED_CHANGES] = self.resumed_changes
        return config

    def save(self) -> Path | None:
        """Write the checkpoint of the current step (rank 0; the others wait). Returns its folder
        (None on the other ranks)."""
        state = self.state_dict()
        weights = full_model_state(self.model) if self.sharded else None  # gathered onto rank 0
        folder = None
        if self.dist.is_main:
            try:
                folder = save_checkpoint(self.run_dir, self.step, self.model, self.config_record(), state,
                                         keep=self.tc.keep_checkpoints, weights=weights)
            except OSError as err:  # disk full, folder removed or made read-only under us, ...
                raise CheckpointError(f"cannot write the checkpoint of step {self.step} under {self.run_dir}: "
                                      f"{err.strerror or err}; the previous checkpoint is intact") from None
        barrier(self.dist)
        return folder

    def resume(self, allow_change=()) -> bool:
        """Continue from the run's latest resumable checkpoint (ConfigError when there is none);
        returns False, having said so, when it is at train.steps already: nothing left to train.
        allow_change: recipe keys that may differ from the checkpoint's (see resume_check)."""
        allow_change = allowed_keys(allow_change)
        ckpt = resumable_checkpoint(self.run_dir)
        try:
            load_weights(self.model, ckpt, load=(lambda sd: load_full_weights(self.model, sd)) if self.sharded else None)
        except CheckpointError:
            self.name_model_difference(read_config(ckpt), ckpt)
            raise
        state = load_trainer_state(ckpt)
        step = int(state["step"])
        if step >= self.tc.steps:
            if self.dist.is_main:
                print(nothing_to_do(self.run_dir, step, self.tc.steps), flush=True)
            return False
        saved = read_config(ckpt)
        changes = check_recipe(saved, self.config, allow_change, step, ckpt)
        changes += self.check_peak_lr(state, allow_change, ckpt)
        self.resumed_changes = recorded_changes(saved) + changes
        self.load_state_dict(state)
        return True

    def check_peak_lr(self, state: dict, allow_change, ckpt: Path) -> list[dict]:
        """Keep the saved peak lr, or this run's where a key that makes it may change (its change
        record then); ConfigError otherwise (see resume_check.check_peak_lr)."""
        if "peak_lr" not in state:  # checkpoints of older versions
            return []
        saved = float(state["peak_lr"])
        changes = check_peak_lr(saved, self.peak_lr, self.effective_batch, self.dist.world_size, allow_change,
                                int(state["step"]), ckpt)
        if not changes:
            self.peak_lr = saved  # the very float the run was using
        return changes

    def name_model_difference(self, saved: dict, ckpt: Path) -> None:
        """CheckpointError naming the model settings that differ between `ckpt` and this run
        (called when the weights do not fit; returns when none differs)."""
        mine = to_dict(self.config)
        if saved.get("method") != mine["method"]:
            raise CheckpointError(f"cannot resume from {ckpt}: it is a {saved.get('method')} run, this is "
                                  f"{mine['method']}; choose another train.out_dir")
        theirs, ours = saved.get("model") or {}, mine["model"]
        differ = [f"model.{k}={theirs.get(k)!r} there, {ours.get(k)!r} here"
                  for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        if differ:
            raise CheckpointError(f"cannot resume from {ckpt}, its weights do not fit this run's model: "
                                  f"{', '.join(differ[:3])}; resume with the run's own settings "
                                  "or choose another train.out_dir")

    # ------------------------------------------------------------- loop
    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, self.tc.steps, self.oc.warmup_steps, self.peak_lr, self.oc.min_lr)

    def next_batch(self) -> dict:
        """The next batch on the device, images float in [0, 1] (uint8 items are converted there),
        augmented unless the dataset crops its items itself."""
        from ..data.device_batch import to_device_float

        batch = to_device_float(next(self.loader), self.device)
        if self.augment is not None and "images" in batch:
            images = batch["images"]
            batch["images"] = self.augment(images)
            if self.views == 2:  # a second, independent augmentation (e.g. MAGE-C)
                batch["images_2"] = self.augment(images)
        return batch

    def train_step(self) -> dict[str, torch.Tensor] | None:
        """One optimiser step over accum_steps micro-batches; returns the step's mean logs, or None
        when the loss or gradient norm was non-finite and the step was skipped (no update)."""
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, torch.Tensor] = {}
        for micro in range(self.tc.accum_steps):
            batch = self.next_batch()
            # DDP averages gradients over ranks in the last micro-batch's backward only
            no_sync = getattr(self.ddp, "no_sync", None)
            syncing = micro == self.tc.accum_steps - 1 or no_sync is None
            with contextlib.nullcontext() if syncing else no_sync():
                with autocast(self.device, self.tc.precision):
                    out = self.forward(**batch)
                finite = bool(torch.isfinite(out.loss))
                if not all_ranks_true(finite, self.dist, self.device):  # skipped on every rank alike
                    return self.skip_step(f"loss {out.loss.item()}" if not finite else "loss on another rank")
                (out.loss / self.tc.accum_steps).backward()
            for key, value in out.logs.items():
                totals[key] = totals.get(key, 0.0) + torch.as_tensor(value, dtype=torch.float32).detach()
        if self.oc.clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.oc.clip_grad)
            totals["grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
            if not torch.isfinite(totals["grad_norm"]):
                return self.skip_step(f"gradient norm {totals['grad_norm'].item()}")
        self.nonfinite_run = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        logs = {k: v / self.tc.accum_steps if k != "grad_norm" else v for k, v in totals.items()}
        logs["lr"] = torch.tensor(lr)
        return logs

    def skip_step(self, what: str) -> None:
        """Drop the step's gradients and count it; TrainingError after max_nonfinite_steps in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        if self.nonfinite_run >= self.tc.max_nonfinite_steps:
            good = latest_checkpoint(self.run_dir, need_state=True)
            raise TrainingError(
                f"non-finite {what} at step {self.step + 1}, {self.nonfinite_run} steps in a row "
                f"(train.max_nonfinite_steps={self.tc.max_nonfinite_steps}); last good checkpoint: "
                f"{good if good is not None else 'none (no checkpoint yet)'}; lower optim.blr, "
                "set optim.clip_grad or check the data, then resume with --resume")
        return None

    def fit(self, resume: bool = False, stop_at: int | None = None, allow_change=()) -> dict[str, float]:
        """Train until config.train.steps (or `stop_at`, checkpointing there). Returns the last logs
        ({} when a resumed run had nothing left to do). allow_change: see `resume`."""
        check_writable_dir(self.run_dir, "train.out_dir")
        if resume and not self.resume(allow_change):
            return {}
        if not resume:  # rank 0 clears; the others only refuse, so every rank raises alike
            if self.dist.is_main or not self.tc.overwrite:
                refuse_or_clear_old_run(self.run_dir, self.tc.overwrite and self.dist.is_main)
            barrier(self.dist)
        end = min(self.tc.steps, stop_at) if stop_at is not None else self.tc.steps
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"train.out_dir={self.run_dir} cannot be created: {err.strerror or err}") from None
        try:
            return self.loop(end, resume)
        except Exception:
            # a fresh run that fails before its first checkpoint leaves no half-made run folder
            if created and self.dist.is_main and latest_checkpoint(self.run_dir) is None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def loop(self, end: int, resumed: bool) -> dict[str, float]:
        """The training loop from self.step to `end` (see `fit`)."""
        main = self.dist.is_main  # rank 0 logs, draws and shows progress
        log = RunLog(self.run_dir, resume_step=self.step if resumed else None) if main else None
        self.model.train()
        bar = tqdm(total=end, initial=self.step, desc=f"train {self.config.method}",
                   disable=not (self.tc.progress and main), dynamic_ncols=True, unit="step")
        window: dict[str, torch.Tensor] = {}
        window_steps, good_steps, window_start, last = 0, 0, time.perf_counter(), {}
        try:
            while self.step < end:
                logs = self.train_step()
                self.step += 1
                window_steps += 1
                if logs is not None:
                    good_steps += 1
                    for key, value in logs.items():
                        window[key] = window.get(key, 0.0) + value
                if self.step % max(self.tc.log_every, 1) == 0 or self.step == end:
                    elapsed = time.perf_counter() - window_start
                    last = {k: float(v) / good_steps for k, v in window.items()}  # means over good steps
                    last.setdefault("lr", self.lr_at(self.step - 1))  # a window of skipped steps only
                    last["images_per_s"] = window_steps * self.effective_batch / max(elapsed, 1e-9)
                    last = mean_over_ranks(last, self.dist, self.device)
                    skipped = self.sync_skipped()
                    if skipped:
                        last["skipped_images"] = skipped
                    if self.nonfinite_total:
                        last["nonfinite_steps"] = self.nonfinite_total
                    if log is not None:
                        log.log(self.step, last)
                    bar.set_postfix(loss=f"{last.get('loss', math.nan):.4f}", lr=f"{last['lr']:.2e}",
                                    img_s=f"{last['images_per_s']:.0f}")
                    window, window_steps, good_steps, window_start = {}, 0, 0, time.perf_counter()
                bar.update(1)
                if self.tc.ckpt_every and self.step % self.tc.ckpt_every == 0 or self.step == end:
                    self.save()
                if self.callbacks and main:
                    # callbacks draw their own randomness: training must not depend on them
                    devices = [self.device] if self.device.type == "cuda" else []
                    with torch.random.fork_rng(devices=devices):
                        for callback in self.callbacks:
                            callback(self, self.step)
        finally:
            bar.close()
            if log is not None:
                log.close()
                write_skipped(self.run_dir, [*self.skipped, *self.loader.skipped_paths], resumed)
        return last
