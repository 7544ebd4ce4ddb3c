"""Hub-style folders: `save_pretrained(model, dir)` / `from_pretrained(path_or_repo_id)` for every
model and tokenizer of the method registry.

    save_pretrained(model, "exports/mae_fmnist", run="runs/mae_fmnist")
    model = from_pretrained("exports/mae_fmnist")              # or MAE.from_pretrained(...)

A folder holds model.safetensors + config.json (the run config: {"method", "model", ...}, the
same two files as a checkpoint, so every checkpoint reader takes it) + README.md, a model card
naming the method, the data, the steps and the last logged metrics of the run + checksums.sha256,
the sha256 of model.safetensors, which from_pretrained (through the checkpoint loader) verifies.

`install_pretrained_methods()` (run when mimkit.hub is imported) gives every registered model
class `save_pretrained(dir)` and a `from_pretrained(path)` classmethod, without touching the
method files. The classes are not made huggingface_hub.ModelHubMixin subclasses (that would mean
changing their bases), but they carry its hook names (`_save_pretrained(save_directory)`,
`_from_pretrained(model_id=...)`) over the same folder layout. huggingface_hub, when installed,
is used only to find a repo id (owner/name) in the local cache: nothing is ever downloaded.
"""
import json
from pathlib import Path

import torch

from ..errors import CheckpointError

CARD_FILE = "README.md"


# --------------------------------------------------------------- save
def method_name(model: torch.nn.Module) -> str:
    """The registry name of `model`'s class (CheckpointError when it is not a registered method)."""
    from ..methods import method_registry

    for name, entry in method_registry().items():
        if type(model) is entry.model_class:
            return name
    raise CheckpointError(f"{type(model).__name__} is not a registered mimkit method; save_pretrained needs one of "
                          f"{', '.join(sorted(method_registry()))}")


def run_summary(run: str | Path | None) -> tuple[dict, dict]:
    """(config dict, last log.csv row) of a run folder or checkpoint ({} for what is not there)."""
    if run is None:
        return {}, {}
    from ..engine.checkpoint import read_config, resolve_checkpoint
    from ..engine.run_log import read_rows

    ckpt = resolve_checkpoint(run)
    config = read_config(ckpt)
    log = next((p / "log.csv" for p in (Path(run), ckpt.parent.parent) if (p / "log.csv").is_file()), None)
    rows = read_rows(log)[1] if log is not None else []
    return config, rows[-1] if rows else {}


def model_card(config: dict, metrics: dict) -> str:
    """The README.md of a saved folder: method, data, steps, metrics and how to load it."""
    data, train = config.get("data") or {}, config.get("train") or {}
    lines = ["---", "library_name: mimkit", "tags: [masked-image-modeling, mimkit, " + config["method"] + "]",
             "---", "", f"# {config['method']} (mimkit)", "",
             f"- method: `{config['method']}`",
             f"- data: `{data.get('name', 'unknown')}` at {data.get('image_size', '?')} px",
             f"- steps: {metrics.get('step', train.get('steps', 'unknown'))}"
             + (f" of {train['steps']}" if metrics and "steps" in train else ""),
             f"- batch: {train.get('batch_size', '?')} per process x {train.get('accum_steps', 1)} accumulation"]
    if metrics:
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items() if k != "step" and _is_number(v))
        lines.append(f"- last logged metrics (log.csv): {shown}")
    lines += ["", "```python", "from mimkit.hub import from_pretrained", "model = from_pretrained(\"THIS_FOLDER\")",
              "```", "", "Model config:", "", "```json", json.dumps(config.get("model", {}), indent=2), "```", ""]
    return "\n".join(lines)


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def save_pretrained(model: torch.nn.Module, directory: str | Path, run: str | Path | None = None) -> Path:
    """Write `model` to `directory` (model.safetensors, config.json, README.md, checksums.sha256);
    `run` (its run folder or checkpoint) supplies the data/train config and the metrics of the card.
    Returns the folder."""
    from ..config import to_dict
    from ..engine.checkpoint import CONFIG_FILE, MODEL_FILE, model_state, write_text_atomic
    from ..engine.integrity import CHECKSUM_FILE, write_checksums
    from .files import save_state_dict_file

    method = method_name(getattr(getattr(model, "_orig_mod", model), "module", model))
    saved, metrics = run_summary(run)
    if saved and saved.get("method") != method:
        raise CheckpointError(f"run {run} is a {saved.get('method')} run but the model is {method}")
    config = {**saved, "method": method, "model": to_dict(model.config)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CHECKSUM_FILE).unlink(missing_ok=True)  # an interrupted re-save must not leave a stale one
    save_state_dict_file(model_state(model), directory / MODEL_FILE, metadata={"format": "pt", "method": method})
    write_checksums(directory, (MODEL_FILE,))
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_text_atomic(directory / CARD_FILE, model_card(config, metrics))
    return directory


# --------------------------------------------------------------- load
def resolve_pretrained(path_or_repo_id: str | Path) -> Path:
    """A local folder / file, or a Hugging Face repo id found in the local cache -> local path."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_repo_id)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        cached = cached_repo(text)
        if cached is not None:
            return cached
        raise CheckpointError(f"{text!r} is not a local folder and not in the local Hugging Face cache; downloads "
                              "are not available offline: download the repo elsewhere (huggingface-cli download "
                              f"{text} --local-dir DIR) and pass DIR")
    raise CheckpointError(f"pretrained model {text!r} does not exist; pass a save_pretrained folder, a run "
                          "folder or a checkpoint")


def cached_repo(repo_id: str) -> Path | None:
    """The local snapshot of `repo_id` in the Hugging Face cache, without network (None if absent)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or an invalid repo id: both mean "not available here"
        return None


def from_pretrained(path_or_repo_id: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a save_pretrained folder (or run folder / checkpoint / cached repo), in eval mode."""
    from ..engine.checkpoint import load_model

    model, _ = load_model(resolve_pretrained(path_or_repo_id), device=device)
    return model


# ------------------------------------------------------- class methods
class PretrainedMixin:
    """save_pretrained / from_pretrained as methods, and ModelHubMixin's hook names leading to the same code."""

    def save_pretrained(self, directory, run=None) -> Path:
        return save_pretrained(self, directory, run)

    def _save_pretrained(self, save_directory) -> None:
        save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", **_):
        model = from_pretrained(path_or_repo_id, device)
        if not isinstance(model, cls):
            raise CheckpointError(f"{path_or_repo_id} holds a {type(model).__name__}, not a {cls.__name__}; "
                                  f"use mimkit.hub.from_pretrained or {type(model).__name__}.from_pretrained")
        return model

    @classmethod
    def _from_pretrained(cls, *, model_id, map_location="cpu", **_):
        return cls.from_pretrained(model_id, map_location)


def install_pretrained_methods() -> None:
    """Give every registered model class the PretrainedMixin methods it does not define itself."""
    from ..methods import method_registry

    names = ("save_pretrained", "_save_pretrained", "from_pretrained", "_from_pretrained")
    for entry in method_registry().values():
        for name in names:
            if name not in vars(entry.model_class) and not hasattr(entry.model_class, name):
                setattr(entry.model_class, name, PretrainedMixin.__dict__[name])
