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
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from .integrity import check_finite, verify_checksum, write_checksums

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"
SAVE_DELAY_ENV = "MIMKIT_TEST_SAVE_DELAY"
CHECKSUMMED_FILES = (MODEL_FILE, STATE_FILE)
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".safetensors")  # other projects' weight files


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and os.replace
    (with the permissions a plain open() would give, not mkstemp's 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o666 & ~current_umask())
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The persistent state dict as contiguous CPU tensors, unwrapped from DDP/compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def is_complete(folder: Path, need_state: bool = False) -> bool:
    """Whether `folder` holds a whole checkpoint (weights + config, and the resume state if asked)."""
    names = (MODEL_FILE, CONFIG_FILE) + ((STATE_FILE,) if need_state else ())
    return all((folder / name).is_file() for name in names)


def latest_checkpoint(run_dir: str | Path, need_state: bool = False) -> Path | None:
    """The newest complete checkpoint folder of a run (with trainer_state.pt when `need_state`),
    or None when it has none. `latest` is trusted only when it names a complete folder."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text().strip()
        candidate = root / name
        if name.startswith("step_") and is_complete(candidate, need_state):
            return candidate
    complete = sorted(p for p in root.glob("step_*") if is_complete(p, need_state))
    return complete[-1] if complete else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (-> its latest checkpoint) or a model.safetensors file
    -> the checkpoint folder; CheckpointError naming the path otherwise."""
    path = Path(path)
    if path.is_file():
        if path.name != MODEL_FILE:
            raise CheckpointError(not_a_checkpoint_message(path))
        path = path.parent
    if (path / MODEL_FILE).is_file():
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path} has {MODEL_FILE} but no {CONFIG_FILE}; a mimkit checkpoint needs both")
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        raise CheckpointError(f"{path} holds no mimkit checkpoint (no {MODEL_FILE}, no checkpoints/ with one)")
    raise CheckpointError(f"checkpoint {path} does not exist")


def not_a_checkpoint_message(file: Path) -> str:
    """What to say when a file other than model.safetensors is passed as a checkpoint."""
    hint = ("; another project's weights are read with mimkit.hub or converted with `mimkit convert` "
            "(see `mimkit convert --list`)" if file.suffix.lower() in WEIGHTS_SUFFIXES else "")
    return (f"{file} is a file but not a mimkit checkpoint; pass a run folder, a checkpoint folder or its "
            f"{MODEL_FILE}{hint}")


def corrupt_remedy(ckpt_dir: Path) -> str:
    """What a message about a damaged file of `ckpt_dir` tells the user to do."""
    if ckpt_dir.name.startswith("step_"):  # a run's checkpoint: earlier ones may be beside it
        return f"restore it, or delete {ckpt_dir} to fall back to the checkpoint before it"
    return "restore it (save or download it again)"


def read_config(ckpt_dir: Path) -> dict:
    try:
        return json.loads((ckpt_dir / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {ckpt_dir / CONFIG_FILE}: {err}") from None


def load_weights(model: torch.nn.Module, ckpt_dir: Path, load=None) -> None:
    """Load model.safetensors into `model` strictly; CheckpointError naming what does not match.
    load: how to put the checked state dict into the model (default model.load_state_dict)."""
    file = ckpt_dir / MODEL_FILE
    verify_checksum(file, corrupt_remedy(ckpt_dir))
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {file}: it is not a valid safetensors file ({err}); "
                              f"{corrupt_remedy(ckpt_dir)}") from None
    check_finite(state, file, corrupt_remedy(ckpt_dir))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)} in the file, "
                       f"{tuple(own[wrong[0]].shape)} in the model")
        raise CheckpointError(f"{file} does not match the model built from its {CONFIG_FILE}: {detail}")
    (load or model.load_state_dict)(state)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint (folder, run folder or model.safetensors) -> (model in eval mode, RunConfig)."""
    from ..config import run_config_from_dict
    from ..methods import build_model

    ckpt_dir = resolve_checkpoint(path)
    config = run_config_from_dict(read_config(ckpt_dir))
    model = build_model(config.method, config.model)
    load_weights(model, ckpt_dir)
    return model.to(device).eval(), config


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
