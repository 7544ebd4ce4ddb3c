"""save_pretrained folders: model.safetensors + config.json (the run config {"method", "model",
...}, the same two files as a checkpoint, so every checkpoint reader takes it) + checksums.sha256
+ README.md, a model card naming the method, the data, the steps and the last logged metrics.

Nothing is ever downloaded: a Hugging Face repo id (owner/name) is looked up in the local cache
only, through huggingface_hub when it is installed.
"""
import json
from pathlib import Path

import torch

from ..config_schema import to_dict
from ..errors import CheckpointError
from .atomic import write_text_atomic
from .checkpoint_folder import CONFIG_FILE, MODEL_FILE, read_config, resolve_checkpoint
from .integrity import CHECKSUM_FILE, write_checksums
from .log_rows import read_rows
from .state_dicts import save_state_dict_file

CARD_FILE = "README.md"


def run_summary(run: str | Path | None) -> tuple[dict, dict]:
    """(config dict, last log.csv row) of a run folder or checkpoint ({} for what is not there)."""
    if run is None:
        return {}, {}
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
    lines += ["", "```python", "from mimkit.registry import from_pretrained",
              "model = from_pretrained(\"THIS_FOLDER\")", "```", "", "Model config:", "", "```json",
              json.dumps(config.get("model", {}), indent=2), "```", ""]
    return "\n".join(lines)


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def write_pretrained(method: str, model_config, state: dict[str, torch.Tensor], directory: str | Path,
                     run: str | Path | None = None) -> Path:
    """Write a save_pretrained folder (model.safetensors, config.json, README.md, checksums.sha256)
    for a `method` model with config dataclass `model_config` and weights `state`; `run` (its run
    folder or checkpoint) supplies the data/train config and the metrics of the card."""
    saved, metrics = run_summary(run)
    if saved and saved.get("method") != method:
        raise CheckpointError(f"run {run} is a {saved.get('method')} run but the model is {method}")
    config = {**saved, "method": method, "model": to_dict(model_config)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CHECKSUM_FILE).unlink(missing_ok=True)  # an interrupted re-save must not leave a stale one
    save_state_dict_file(state, directory / MODEL_FILE, metadata={"format": "pt", "method": method})
    write_checksums(directory, (MODEL_FILE,))
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_text_atomic(directory / CARD_FILE, model_card(config, metrics))
    return directory


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
