"""Checkpoints: `model.safetensors` + `config.json` (+ `trainer_state.pt` for resume), written
atomically, and the reverse: finding and loading the latest one.

Layout of a run folder:
    RUN/checkpoints/step_00000500/{model.safetensors, config.json, trainer_state.pt, checksums.sha256}
    RUN/checkpoints/latest          text file naming the newest complete checkpoint folder
checksums.sha256 records the sha256 of model.safetensors and trainer_state.pt (not of config.json,
which users may edit); every load verifies the file it reads against it and refuses NaN/inf
weights (mimkit/engine/integrity.py). Checkpoints of older versions, without it, load unverified.
A checkpoint folder is assembled under a temporary name and renamed into place only when every
file is written and flushed, and `latest` is replaced atomically after that, so a process killed
at any moment leaves the previous checkpoint intact and `latest` pointing at a complete one.
Folders are deleted (re-saved step, pruning) by first renaming them to a hidden `.trash-` name,
so no half-deleted `step_*` folder is ever visible; leftovers of a killed save are removed by the
next save.

Test hook: when the environment variable MIMKIT_TEST_SAVE_DELAY is set to a number of seconds,
save_checkpoint sleeps that long after writing model.safetensors into the temporary folder, so a
crash test can kill the process in the middle of a checkpoint write (tests/test_crash_safety.py).
"""
import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..files.atomic import current_umask, fsync_dir, fsync_file, write_text_atomic
from ..files.checkpoint_folder import (CHECKSUMMED_FILES, CONFIG_FILE, LATEST_FILE, MODEL_FILE, STATE_FILE,
                                       corrupt_remedy)
from ..files.integrity import verify_checksum, write_checksums

SAVE_DELAY_ENV = "MIMKIT_TEST_SAVE_DELAY"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The persistent state dict as contiguous CPU tensors, unwrapped from DDP/compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def discard(folder: Path) -> None:
    """Delete `folder` without ever leaving it half-deleted under its own name."""
    trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".trash-"))
    os.rename(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(root: Path) -> None:
    """Temporary and trash folders a killed save left behind."""
    for leftover in root.glob(".*"):
        if leftover.is_dir() and (".tmp-" in leftover.name or leftover.name.startswith(".trash-")):
            shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, config: dict,
                    trainer_state: dict | None = None, keep: int = 0,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write RUN/checkpoints/step_{step:08d} atomically, point `latest` at it, and delete all but
    the newest `keep` checkpoints (0 = keep all). Returns the checkpoint folder.
    weights: the state dict to write instead of model's (e.g. gathered from an FSDP-sharded model)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_leftovers(root)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
    tensors = model_state(model) if weights is None else {k: v.contiguous() for k, v in weights.items()}
    save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt", "step": str(step)})
    delay = os.environ.get(SAVE_DELAY_ENV)
    if delay:  # test hook (see the module docstring)
        time.sleep(float(delay))
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / STATE_FILE)
    write_checksums(tmp, CHECKSUMMED_FILES)
    for name in os.listdir(tmp):
        fsync_file(tmp / name)
    fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. after resume): move the old one out first
        discard(final)
    os.rename(tmp, final)
    fsync_dir(root)
    write_text_atomic(root / LATEST_FILE, final.name + "\n")
    fsync_dir(root)
    if keep > 0:
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            discard(old)
    return final


def load_trainer_state(ckpt_dir: Path) -> dict:
    """The resume state saved beside a checkpoint (tensors and plain values only)."""
    file = ckpt_dir / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{ckpt_dir} has no {STATE_FILE}; it cannot be resumed (weights-only checkpoint)")
    verify_checksum(file, corrupt_remedy(ckpt_dir))  # before unpickling anything
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # a pickled callable: code, not data
            raise CheckpointError(f"refusing to unpickle code from {file}: it holds objects beyond tensors and "
                                  "plain values, which a mimkit trainer state never does (nothing from it was run); "
                                  f"delete {ckpt_dir} to resume from the checkpoint before it") from None
        raise CheckpointError(f"cannot read {file} (UnpicklingError): it is corrupt or not a mimkit trainer "
                              f"state; {corrupt_remedy(ckpt_dir)}") from None
    except Exception as err:  # torch's messages here run to many lines: name the type only
        raise CheckpointError(f"cannot read {file} ({type(err).__name__}): it is corrupt or not a mimkit trainer "
                              f"state; {corrupt_remedy(ckpt_dir)}") from None
