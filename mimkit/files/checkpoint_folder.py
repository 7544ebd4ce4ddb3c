"""Reading mimkit checkpoint folders: the file names, finding a run's latest complete checkpoint,
resolving what a user passes (checkpoint folder, run folder, model.safetensors), and loading the
weights strictly, verified against checksums.sha256 and refused when non-finite.

Layout of a run folder (written by mimkit.engine.checkpoint.save_checkpoint):
    RUN/checkpoints/step_00000500/{model.safetensors, config.json, trainer_state.pt, checksums.sha256}
    RUN/checkpoints/latest          text file naming the newest complete checkpoint folder
A save_pretrained folder holds the same model.safetensors + config.json (+ checksums.sha256).
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError
from .integrity import check_finite, verify_checksum

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"
CHECKSUMMED_FILES = (MODEL_FILE, STATE_FILE)
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".safetensors")  # other projects' weight files


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
