"""The rules of `mimkit train --resume` and the counts of skipped images (issue 14).

Resume: refused without a resumable checkpoint; says "nothing to do" (exit 0, the run untouched)
when the checkpoint is at train.steps; refuses a changed recipe (or a changed peak lr) unless
--allow-change names the keys, and then records the changes in config.json; harmless keys
change freely. Skipped images: one unreadable file met in two epochs counts once, as an integer,
in stdout, log.csv, skipped_images.txt and the trainer state; the reconstruction picture passes
over it.
"""
import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import mimkit.engine.trainer as trainer_module
from mimkit.cli import main
from mimkit.config import load_config
from mimkit.data.collate import SkippedItem
from mimkit.files.checkpoint_folder import latest_checkpoint
from mimkit.registry import load_model
from mimkit.engine.checkpoint import load_trainer_state
from mimkit.engine.optim import scaled_lr, warmup_cosine
from mimkit.engine.resume_check import fill_from_saved
from mimkit.train import build_callbacks

TINY = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2", "train.batch_size=32",
        "train.steps=4", "train.progress=false", "train.picture_every=0"]
TRAIN = ["train", "mae_micro_fmnist", *TINY]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mimkit ARGV` run in this process."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mimkit: error: "), err
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def saved_config(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:08d}" / "config.json").read_text())


def log_rows(run: Path) -> dict[int, dict]:
    with open(run / "log.csv", newline="") as handle:
        return {int(r["step"]): r for r in csv.DictReader(handle)}


def cut_back_to_step_2(run: Path) -> Path:
    """The run as a kill after step 2 leaves it: checkpoint 4 gone, so --resume continues from 2."""
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    return run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("resume_rules") / "run"
    assert main([*TRAIN, "train.ckpt_every=2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run for one test (its config.json names the original train.out_dir,
    which may differ freely)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    for folder, what in ((missing, "does not exist"), (empty, "holds no resumable checkpoint")):
        status, _, err = cli(capsys, *TRAIN, "--out", folder, "--resume")
        assert status == 2
        assert one_line_error(err) == (f"mimkit: error: cannot resume: train.out_dir={folder} {what}; "
                                       "drop --resume to start a fresh run")
    assert not missing.exists() and not any(empty.iterdir())


@pytest.mark.parametrize("steps", [4, 2])
def test_resume_with_nothing_left_to_do_says_so_and_touches_nothing(run, capsys, steps):
    before = files(run)
    status, out, err = cli(capsys, *TRAIN, f"train.steps={steps}", "--out", run, "--resume")
    assert status == 0, err
    assert out.splitlines()[0] == (f"nothing to do: {run} is at step 4 of train.steps={steps}; raise train.steps "
                                   "(with --allow-change train.steps) to train further")
    assert files(run) == before


def test_a_changed_recipe_is_refused_naming_the_keys_and_the_way_out(run, capsys):
    before = files(run)
    blr = saved_config(run, 4)["optim"]["blr"]
    status, _, err = cli(capsys, *TRAIN, "train.steps=6", "optim.blr=1e-2", "--out", run, "--resume",
                         "--allow-change", "train.steps")
    assert status == 2
    line = one_line_error(err)
    assert f"optim.blr={blr!r} there, 0.01 here" in line and "--allow-change optim.blr " in line
    assert "train.steps=" not in line  # allowed, so not listed
    status, _, err = cli(capsys, *TRAIN, "train.steps=6", "--out", run, "--resume", "--allow-change", "train.stepz")
    assert status == 2 and "--allow-change train.stepz: no such config key" in one_line_error(err)
    status, _, err = cli(capsys, *TRAIN, "--out", run, "--allow-change", "optim.blr")
    assert status == 2 and "--allow-change only applies to a resumed run" in one_line_error(err)
    assert files(run) == before  # a refused resume writes nothing


def test_allowed_changes_are_used_and_recorded_over_resumes(run, capsys):
    config = load_config("mae_micro_fmnist", TINY)
    old_blr = saved_config(run, 4)["optim"]["blr"]
    status, _, err = cli(capsys, *TRAIN, "train.steps=6", "optim.blr=1e-2", "train.log_every=1", "--out", run,
                         "--resume", "--allow-change", "train.steps,optim.blr")
    assert status == 0, err
    saved = saved_config(run, 6)
    assert saved["optim"]["blr"] == 0.01 and saved["train"]["steps"] == 6
    first = [{"step": 4, "key": "optim.blr", "before": old_blr, "after": 0.01},
             {"step": 4, "key": "train.steps", "before": 4, "after": 6},
             {"step": 4, "key": "peak_lr", "before": pytest.approx(scaled_lr(old_blr, 32)),
              "after": pytest.approx(scaled_lr(0.01, 32))}]
    assert saved["resumed_changes"] == first
    peak = scaled_lr(0.01, 32)  # the new lr is the one used, on the schedule of the new train.steps
    rows = log_rows(run)
    for step in (5, 6):
        expected = warmup_cosine(step - 1, 6, config.optim.warmup_steps, peak, config.optim.min_lr)
        assert float(rows[step]["lr"]) == pytest.approx(expected, rel=1e-6)
    _, loaded = load_model(run)  # the record does not stop the checkpoint from loading
    assert loaded.optim.blr == 0.01
    # a second resume adds its change to the record
    status, _, err = cli(capsys, *TRAIN, "train.steps=8", "optim.blr=1e-2", "--out", run, "--resume",
                         "--allow-change", "train.steps")
    assert status == 0, err
    assert saved_config(run, 8)["resumed_changes"] == [*first, {"step": 6, "key": "train.steps", "before": 6,
                                                                "after": 8}]


def test_harmless_keys_change_freely_and_are_not_recorded(run, capsys):
    cut_back_to_step_2(run)
    status, _, err = cli(capsys, *TRAIN, "train.log_every=1", "train.keep_checkpoints=5", "train.ckpt_every=1",
                         "--out", run, "--resume")
    assert status == 0, err
    saved = saved_config(run, 4)
    assert "resumed_changes" not in saved and saved["train"]["log_every"] == 1
    assert sorted(log_rows(run)) == [3, 4]
    assert (run / "checkpoints" / "step_00000003").is_dir()


def test_a_changed_peak_lr_is_refused_unless_a_key_that_makes_it_may_change(run, capsys, monkeypatch):
    """A resume under torchrun with another number of processes changes the effective batch and so
    the peak lr with the same config: simulated by a checkpoint whose saved peak lr is twice this run's."""
    cut_back_to_step_2(run)
    real = trainer_module.load_trainer_state

    def doubled(ckpt):
        state = real(ckpt)
        return {**state, "peak_lr": 2 * state["peak_lr"]}

    monkeypatch.setattr(trainer_module, "load_trainer_state", doubled)
    status, _, err = cli(capsys, *TRAIN, "--out", run, "--resume")
    assert status == 2
    line = one_line_error(err)
    assert "its peak learning rate was" in line and "process(es)" in line and "--allow-change" in line
    assert "optim.blr" in line
    status, _, err = cli(capsys, *TRAIN, "--out", run, "--resume", "--allow-change", "train.batch_size")
    assert status == 0, err
    (record,) = saved_config(run, 4)["resumed_changes"]
    assert record["key"] == "peak_lr" and record["before"] == pytest.approx(2 * record["after"])


def write_pngs(folder: Path, count: int, corrupt: str) -> Path:
    """`count` 8x8 grey PNGs, one of them (`corrupt`, sorted first) not an image at all."""
    folder.mkdir()
    (folder / corrupt).write_bytes(b"not a png")
    for i in range(count - 1):
        Image.new("L", (8, 8), color=8 * i).save(folder / f"img_{i:02d}.png")
    return folder


def test_skipped_file_met_in_two_epochs_counts_once_everywhere(tmp_path, capsys):
    images = write_pngs(tmp_path / "images", 32, "a_corrupt.png")  # dataset[0] is unreadable
    run = tmp_path / "run"
    # 32 files, batches of 16: 2 steps per epoch, so 4 steps read every file twice
    status, out, err = cli(capsys, "train", "mae_micro_fmnist", f"data.name={images}", *TINY[1:4],
                           "train.batch_size=16", "train.steps=4", "train.log_every=1", "train.progress=false",
                           "train.picture_every=2", "data.on_error=skip", "--out", run)
    assert status == 0, err
    assert "skipped 1 unreadable image file(s) (data.on_error=skip)" in out
    assert (run / "skipped_images.txt").read_text().split() == [str(images / "a_corrupt.png")]
    rows = log_rows(run)
    assert rows[4]["skipped_images"] == "1"  # an integer, the number of distinct files
    assert {r["skipped_images"] for r in rows.values()} <= {"", "1"}
    state = load_trainer_state(latest_checkpoint(run))
    assert state["skipped_images"] == 1 and isinstance(state["skipped_images"], int)
    assert (run / "pictures" / "reconstruction_step_00000004.png").is_file()  # the picture skips the file


def test_reconstruction_picture_takes_readable_items_or_none():
    config = load_config("mae_micro_fmnist", [*TINY[:-1], "train.picture_every=1"])
    model = SimpleNamespace(generates=False, reconstructs_pixels=True)  # the capabilities build_callbacks asks
    good = {"images": torch.zeros(1, 8, 8), "labels": torch.tensor(0)}
    callbacks = build_callbacks(model, config, [SkippedItem("x.png")] * 3 + [good] * 10)
    assert len(callbacks) == 1 and callbacks[0].images.shape == (8, 1, 8, 8)
    assert build_callbacks(model, config, [SkippedItem("x.png")] * 64 + [good]) == []


def test_fields_filled_at_run_start_keep_their_saved_values():
    config = load_config("mae_micro_fmnist", [*TINY, "model.pixel_mean=[]", "model.pixel_std=[]"])
    saved = {"model": {"pixel_mean": [0.25], "pixel_std": [0.5]}}
    filled = fill_from_saved(config, saved)
    assert filled.model.pixel_mean == (0.25,) and filled.model.pixel_std == (0.5,)
    given = load_config("mae_micro_fmnist", [*TINY, "model.pixel_mean=[0.1]", "model.pixel_std=[0.2]"])
    assert fill_from_saved(given, saved) == given  # values the user set are compared, not replaced
