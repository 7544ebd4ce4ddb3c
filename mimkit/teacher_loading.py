"""Floor 6, where runs are assembled: a path named by model.teacher -> a frozen VQ-KD Teacher.

    load_teacher("runs/mae_teacher")        # a mimkit checkpoint / run folder (a model with patch_features)
    load_teacher("models/dino-vitb16")      # a Hugging Face vision model saved in a local directory
"""
import json
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .registry import load_model
from .tokenizers.teacher import HFPatchFeatures, Teacher, mimkit_teacher


def _hf_pixel_statistics(directory: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of shape (1, C, 1, 1) from preprocessor_config.json, else 0.5 / 0.5."""
    mean, std = [0.5] * channels, [0.5] * channels
    file = directory / "preprocessor_config.json"
    if file.is_file():
        try:
            spec = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {file}: {err}") from None
        mean, std = spec.get("image_mean", mean), spec.get("image_std", std)
    return torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)


def hf_teacher(directory) -> Teacher:
    """A Hugging Face vision model saved with save_pretrained in `directory` (read offline).

    The target per patch (see HFPatchFeatures):
    - a CLIP model (one with `vision_model` and `visual_projection`, i.e. transformers' CLIPModel):
      visual_projection(vision_model.post_layernorm(patch tokens)), (N, L, projection_dim), 512-d for
      ViT-B/16 - BEiT v2's VQ-KD CLIP target (ln_post of the patch tokens times proj), not the 768-d
      last_hidden_state, which CLIP takes before its final layer norm and projection;
    - another model with a text half (`vision_model`, no projection): its vision tower's
      last_hidden_state patch tokens;
    - any other vision model (ViT, DINO, ...): its last_hidden_state patch tokens.
    """
    from transformers import AutoModel

    directory = Path(directory)
    try:
        model = AutoModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the Hugging Face model in {directory}: {str(err).splitlines()[0]}") from None
    head = None
    if hasattr(model, "vision_model"):
        projection = getattr(model, "visual_projection", None)
        model = model.vision_model
        if projection is not None:
            norm = getattr(model, "post_layernorm", None)
            if norm is None:
                raise ConfigError(f"the Hugging Face model in {directory} has a visual_projection but its vision "
                                  f"tower has no post_layernorm; cannot form CLIP's projected patch features")
            head = nn.Sequential(norm, projection)
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "vision_config", cfg)
    if not all(hasattr(cfg, k) for k in ("image_size", "patch_size")):
        raise ConfigError(f"the Hugging Face model in {directory} is not a ViT-like vision model "
                          f"(its config has no image_size / patch_size)")
    channels = int(getattr(cfg, "num_channels", 3))
    pair = lambda v: (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))  # noqa: E731
    mean, std = _hf_pixel_statistics(directory, channels)
    adapter = HFPatchFeatures(model, pair(cfg.image_size), pair(cfg.patch_size), channels, mean, std, head=head)
    return Teacher(adapter, adapter, grid_size=adapter.grid_size, name=str(directory))


def is_hf_directory(path: Path) -> bool:
    """A save_pretrained folder: config.json naming a model_type (a mimkit one names a method)."""
    file = path / "config.json"
    if not file.is_file():
        return False
    try:
        spec = json.loads(file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and "model_type" in spec and "method" not in spec


def load_teacher(path, key: str = "model.teacher") -> Teacher:
    """A mimkit checkpoint / run folder or a Hugging Face model directory -> Teacher (CPU, eval).
    ConfigError naming `key` and the path when it is neither."""
    if not path:
        raise ConfigError(f"{key} is not set: give a mimkit run folder with per-patch features (e.g. "
                          f"`mimkit train mae_demo_fmnist --out runs/mae_teacher`, then {key}=runs/mae_teacher) "
                          f"or a Hugging Face vision model directory")
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={path} does not exist; train a teacher first (e.g. `mimkit train mae_demo_fmnist "
                          f"--out {path}`) or point {key} at a Hugging Face model directory")
    if path.is_dir() and is_hf_directory(path):
        return hf_teacher(path)
    # a mimkit checkpoint
    try:
        model, config = load_model(path)
    except CheckpointError as err:
        raise ConfigError(f"{key}={path} is neither a mimkit checkpoint nor a Hugging Face model directory: "
                          f"{err}") from None
    return mimkit_teacher(model, name=f"{path} ({config.method})")




def attach_teacher_if_available(model, config) -> str:
    """For a distilled tokenizer (VQ-KD, with `attach_teacher`): attach the teacher its
    config.model.teacher names when it loads -> "" (also for any other model); else a note why not."""
    if not hasattr(model, "attach_teacher"):
        return ""
    try:
        model.attach_teacher(load_teacher(config.model.teacher))
    except ConfigError as err:
        return f"teacher cos  not measured: {err}"
    return ""
