"""Crash safety and non-finite losses: SIGKILL at random moments (one inside a checkpoint write),
then --resume, must give the losses of an uninterrupted run; NaN steps are skipped and counted.

The killed runs are `mimkit train` processes forked from the test process (multiprocessing
"fork"): the same CLI code path as a fresh interpreter, without paying the ~5 s torch import per
launch. The kill inside a checkpoint write uses checkpoint.py's documented test hook
MIMKIT_TEST_SAVE_DELAY (a sleep after model.safetensors is written into the temporary folder).
"""
import csv
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mimkit.train  # noqa: F401 (this and the next two imported before forking, so children start at once)
from mimkit.config import load_config
from mimkit.data import InMemoryDataset
from mimkit.engine.checkpoint import SAVE_DELAY_ENV, load_trainer_state, save_checkpoint
from mimkit.files.checkpoint_folder import STATE_FILE, is_complete, latest_checkpoint
from mimkit.registry import load_model
from mimkit.engine.run_log import RunLog
from mimkit.files.log_rows import read_rows
from mimkit.engine.trainer import Trainer
from mimkit.errors import CheckpointError, TrainingError
from mimkit.methods import Output
from cli_child import run_cli  # tests/cli_child.py

torch.optim.AdamW(nn.Linear(1, 1).parameters())  # its first construction imports torch._dynamo (~5 s)
try:
    import kornia.augmentation  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
except ImportError:  # optional: only slower without
    pass

STEPS = 30
TINY = ["data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16", "model.depth=1",
        "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2",
        "train.batch_size=8", f"train.steps={STEPS}", "train.ckpt_every=5", "train.log_every=1",
        "train.keep_checkpoints=2", "train.progress=false", "train.threads=1", "train.picture_every=0"]


def start(argv: list[str], env: dict[str, str] | None = None) -> multiprocessing.Process:
    proc = multiprocessing.get_context("fork").Process(target=run_cli, args=(argv, env or {}))
    proc.start()
    return proc


def logged_steps(run: Path) -> int:
    try:
        return len(read_rows(run / "log.csv")[1])
    except (OSError, KeyError):
        return 0


def partial_save(run: Path) -> bool:
    """Whether a checkpoint is half written: a temporary folder holding the weights file only."""
    root = run / "checkpoints"
    return any((tmp / "model.safetensors").is_file() and not (tmp / STATE_FILE).exists()
               for tmp in root.glob(".step_*.tmp-*")) if root.is_dir() else False


def kill_when(proc: multiprocessing.Process, condition, jitter: float, rng: random.Random, timeout: float = 60):
    """SIGKILL `proc` once condition() holds (plus a random delay up to `jitter` s); whether it was still running."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.join()
            return False
        time.sleep(0.002)
    time.sleep(rng.uniform(0, jitter))
    alive = proc.is_alive()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    return alive and proc.exitcode == -signal.SIGKILL


def assert_checkpoints_sound(run: Path) -> None:
    """Every visible step_* folder is complete, and the latest one loads (weights + resume state)."""
    root = run / "checkpoints"
    for folder in root.glob("step_*") if root.is_dir() else ():
        assert is_complete(folder, need_state=True), f"half-written checkpoint visible: {folder}"
    latest = latest_checkpoint(run, need_state=True)
    if latest is not None:
        load_model(latest)
        assert int(load_trainer_state(latest)["step"]) == int(latest.name.split("_")[1])


def losses(run: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["loss"])) for r in read_rows(run / "log.csv")[1]]


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    data = tmp_path / "images.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (64, 8, 8), dtype=np.uint8))
    argv = ["train", "mae_micro_fmnist", f"data.name={data}", *TINY]

    reference = start([*argv, "--out", str(tmp_path / "full")])
    run = tmp_path / "killed"
    first = start([*argv, "--out", str(run)])
    # kill 1: at a random moment after a random step past the first checkpoint (step 5: --resume refuses a
    # folder with no checkpoint); kill 2: inside a checkpoint write; kill 3: random again
    target_1, target_3 = rng.randint(6, 12), rng.randint(17, 25)
    assert kill_when(first, lambda: logged_steps(run) >= target_1, 0.03, rng), f"seed {seed}: run 1 ended first"
    assert_checkpoints_sound(run)
    second = start([*argv, "--out", str(run), "--resume"], env={SAVE_DELAY_ENV: "5"})
    assert kill_when(second, lambda: partial_save(run), 0.2, rng), f"seed {seed}: no kill inside a save"
    assert_checkpoints_sound(run)
    assert partial_save(run), "the kill should have left a half-written temporary folder"
    third = start([*argv, "--out", str(run), "--resume"])
    assert kill_when(third, lambda: logged_steps(run) >= target_3, 0.03, rng), f"seed {seed}: run 3 ended first"
    assert_checkpoints_sound(run)
    last = start([*argv, "--out", str(run), "--resume"])
    last.join()
    reference.join()
    assert last.exitcode == 0 and reference.exitcode == 0

    full, killed = losses(tmp_path / "full"), losses(run)
    assert [s for s, _ in killed] == list(range(1, STEPS + 1)), f"seed {seed}: each step logged once"
    assert killed == full, f"seed {seed}: losses differ from the uninterrupted run"
    assert not partial_save(run) and not list((run / "checkpoints").glob(".*tmp-*")), "leftovers removed"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000025", "step_00000030"]


def test_log_rows_cut_by_a_kill_or_past_the_checkpoint_are_dropped(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.log(step, {"loss": step / 10, "lr": 0.1})
    with open(tmp_path / "log.csv", "a") as handle:
        handle.write("6,0.")  # the kill cut this row short
    log = RunLog(tmp_path, resume_step=4, tensorboard=False)
    log.log(5, {"loss": 0.55, "lr": 0.1})
    columns, rows = read_rows(tmp_path / "log.csv")
    assert columns == ["step", "loss", "lr"]
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(1, .1), (2, .2), (3, .3), (4, .4), (5, .55)]
    assert (tmp_path / "log.csv").read_text().count("\n") == 6  # header + 5 rows, nothing garbled


def test_latest_pointing_at_a_missing_or_incomplete_folder_falls_back(tmp_path):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, 1, model, {"method": "x"}, {"step": 1})
    newest = save_checkpoint(tmp_path, 2, model, {"method": "x"}, {"step": 2})
    (newest / STATE_FILE).unlink()  # as if a deletion had been cut short
    assert latest_checkpoint(tmp_path, need_state=True).name == "step_00000001"
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009\n")
    assert latest_checkpoint(tmp_path).name == "step_00000002"


# ------------------------------------------------------------------------------- non-finite losses

class NaNOnDemand(nn.Module):
    """Regression whose loss is NaN at the (1-based) optimizer steps listed in `bad_steps`."""

    def __init__(self, bad_steps: set[int]):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.bad_steps, self.calls = bad_steps, 0

    def forward(self, images, labels=None):
        self.calls += 1
        loss = (self.linear(images.flatten(1)).squeeze(1) - labels.float()).pow(2).mean()
        if self.calls in self.bad_steps:
            loss = loss * float("nan")
        return Output(loss=loss, logs={"loss": loss.detach()})


def nan_trainer(tmp_path, bad_steps, steps, **train):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 2, 2), dtype=torch.uint8)
    data = InMemoryDataset(images, torch.arange(32) % 3)
    config = load_config("mae_micro_fmnist", [f"train.out_dir={tmp_path}", f"train.steps={steps}",
                                              "train.batch_size=8", "train.log_every=1", "train.progress=false",
                                              "optim.lr=0.05", *[f"train.{k}={v}" for k, v in train.items()]])
    torch.manual_seed(1)
    return Trainer(NaNOnDemand(set(bad_steps)), config, data)


def test_nonfinite_steps_are_skipped_without_touching_weights_and_counted(tmp_path):
    trainer = nan_trainer(tmp_path, {3, 4}, steps=5, ckpt_every=0)
    seen = {}  # step -> (weights, Adam's first moments) after that step

    def snapshot(trainer, step):
        seen[step] = ([p.detach().clone() for p in trainer.model.parameters()],
                      [s["exp_avg"].clone() for s in trainer.optimizer.state.values()])
        assert all(p.grad is None for p in trainer.model.parameters())

    trainer.callbacks.append(snapshot)
    trainer.fit()
    for step in (3, 4):  # NaN steps: no update of the weights nor of the optimizer state
        assert all(torch.equal(a, b) for a, b in zip(seen[2][0] + seen[2][1], seen[step][0] + seen[step][1]))
    assert not torch.equal(seen[4][0][0], seen[5][0][0])  # step 5 is fine again: the weights move
    assert not torch.equal(seen[1][0][0], seen[2][0][0])
    with open(tmp_path / "log.csv") as handle:
        rows = {int(r["step"]): r for r in csv.DictReader(handle)}
    assert [rows[s]["nonfinite_steps"] for s in range(1, 6)] == ["", "", "1", "2", "2"]  # counts: integers
    assert rows[3]["loss"] == rows[4]["loss"] == "" and float(rows[5]["loss"]) >= 0
    assert trainer.nonfinite_run == 0 and trainer.nonfinite_total == 2


def test_too_many_nonfinite_steps_stop_naming_step_and_intact_checkpoint(tmp_path):
    trainer = nan_trainer(tmp_path, set(range(5, 100)), steps=20, ckpt_every=2, max_nonfinite_steps=3)
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    latest = tmp_path / "checkpoints" / "step_00000006"
    assert "at step 7, 3 steps in a row" in message and str(latest) in message and "\n" not in message
    # steps 5 and 6 were skipped, so checkpoint 6 holds the weights after step 4: sound and finite
    from safetensors.torch import load_file
    four, six = (load_file(str(tmp_path / "checkpoints" / f"step_0000000{s}" / "model.safetensors")) for s in (4, 6))
    assert torch.equal(four["linear.weight"], six["linear.weight"])
    assert torch.equal(six["linear.weight"], trainer.model.linear.weight.detach())
    assert torch.isfinite(six["linear.weight"]).all() and torch.isfinite(six["linear.bias"]).all()
    assert int(load_trainer_state(latest)["nonfinite"]["run"]) == 2


def test_a_failing_checkpoint_write_is_named_and_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = nan_trainer(tmp_path, set(), steps=4, ckpt_every=2)
    import mimkit.engine.trainer as trainer_module

    real = trainer_module.save_checkpoint

    def full_disk(run_dir, step, *args, **kwargs):
        if step == 4:
            raise OSError(28, "No space left on device")
        return real(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", full_disk)
    with pytest.raises(CheckpointError, match=f"checkpoint of step 4 under {tmp_path}: No space left on device"):
        trainer.fit()
    assert latest_checkpoint(tmp_path, need_state=True).name == "step_00000002"
    load_trainer_state(tmp_path / "checkpoints" / "step_00000002")
