"""Checkpoints: `model.safetensors` + `config.json` (+ `trainer_state.pt` for resume), written
atomically, and the reverse: finding and loading the latest one.

Layout of a run folder:
    RUN/checkpoints/step_00000500/{model.safetensors, config.json, trainer_state.pt}
    RUN/checkpoints/latest          text file naming the newest complete checkpoint folder
A checkpoint folder is assembled under a temporary name and renamed into place only when every
file is written and flushed, and `latest` is replaced atomically after that, so a process killed
at any moment leaves the previous checkpoint intact and `latest` pointing at a complete one.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, config: dict,
                    trainer_state: dict | None = None, keep: int = 0) -> Path:
    """Write RUN/checkpoints/step_{step:08d} atomically, point `latest` at it, and delete all but
    the newest `keep` checkpoints (0 = keep all). Returns the checkpoint folder."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    save_file(model_state(model), str(tmp / MODEL_FILE), metadata={"format": "pt", "step": str(step)})
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / STATE_FILE)
    for name in os.listdir(tmp):
        fsync_file(tmp / name)
    if final.exists():  # re-saving a step (e.g. after resume): move the old one out first
        shutil.rmtree(final)
    os.rename(tmp, final)
    write_text_atomic(root / LATEST_FILE, final.name + "\n")
    if keep > 0:
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None when it has none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / MODEL_FILE).is_file():
            return candidate
    complete = sorted(p for p in root.glob("step_*") if (p / CONFIG_FILE).is_file() and (p / MODEL_FILE).is_file())
    return complete[-1] if complete else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (-> its latest checkpoint) or a model.safetensors file
    -> the checkpoint folder; CheckpointError naming the path otherwise."""
    path = Path(path)
    if path.is_file() and path.name == MODEL_FILE:
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


def read_config(ckpt_dir: Path) -> dict:
    try:
        return json.loads((ckpt_dir / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {ckpt_dir / CONFIG_FILE}: {err}") from None


def load_weights(model: torch.nn.Module, ckpt_dir: Path) -> None:
    """Load model.safetensors into `model` strictly; CheckpointError naming what does not match."""
    file = ckpt_dir / MODEL_FILE
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {file}: {err}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)} in the file, "
                       f"{tuple(own[wrong[0]].shape)} in the model")
        raise CheckpointError(f"{file} does not match the model built from its {CONFIG_FILE}: {detail}")
    model.load_state_dict(state)


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
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {file}: {err}") from None
