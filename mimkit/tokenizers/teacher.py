"""Teachers for VQ-KD: frozen models that give one feature vector per image patch.

A `Teacher` maps images (N, C, H, W) in [0, 1] to features (N, L, D), L = h * w patches in
row-major order, with no gradient and always in eval mode. Three ways to get one:

    load_teacher("runs/mae_teacher")        # a mimkit checkpoint / run folder (a model with patch_features)
    load_teacher("models/dino-vitb16")      # a Hugging Face vision model saved in a local directory
    Teacher(my_fn, grid_size=(7, 7))        # any callable images -> (N, L, D)

Each adapter prepares the [0, 1] images its own way (a mimkit MAE normalises them itself; a Hugging
Face model gets them resized to its image_size, grey repeated to its channels and normalised with
the image_mean / image_std of its preprocessor_config.json, 0.5 / 0.5 when there is none).
"""
import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError


class Teacher(nn.Module):
    """A frozen per-patch feature extractor around `extract` (images -> (N, L, D)).

    module: the nn.Module `extract` runs (frozen here, moved by .to()); grid_size: its (h, w)
    patch grid when known (checked against the tokenizer's); name: how errors refer to it.
    """

    def __init__(self, extract: Callable[[torch.Tensor], torch.Tensor], module: nn.Module | None = None,
                 grid_size: tuple[int, int] | None = None, name: str = "callable"):
        super().__init__()
        self.extract = extract
        self.module = module
        if module is not None:
            module.requires_grad_(False)
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.name = name
        self.train(False)

    def train(self, mode: bool = True):
        """A teacher stays in eval mode (no dropout, frozen statistics) whatever its owner does."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> features (N, L, D) float32."""
        features = self.extract(images)
        if not isinstance(features, torch.Tensor) or features.ndim != 3 or features.shape[0] != images.shape[0]:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ConfigError(f"the teacher {self.name} must return features (N, L, D) for N images, got {got}")
        return features.float()

    def output_shape(self, in_chans: int, img_size: tuple[int, int]) -> tuple[int, int]:
        """(L, D) of the features for one blank image of the tokenizer's input size."""
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        features = self(torch.zeros(1, in_chans, *img_size, device=device))
        return int(features.shape[1]), int(features.shape[2])


# ------------------------------------------------------------------------------ adapters
def mimkit_teacher(model: nn.Module, name: str = "mimkit model") -> Teacher:
    """A mimkit model with `patch_features(images) -> (N, L, D)` (e.g. an MAE's normed encoder tokens)."""
    if not hasattr(model, "patch_features"):
        raise ConfigError(f"the teacher {name} ({type(model).__name__}) has no patch_features(images); "
                          f"use a model that gives per-patch features, e.g. an MAE")
    grid = getattr(model, "grid_size", None)
    return Teacher(model.patch_features, model, grid_size=grid, name=name)


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


class HFPatchFeatures(nn.Module):
    """A Hugging Face vision model as images in [0, 1] -> last_hidden_state without its leading
    non-patch tokens (cls, distillation or register tokens): (N, L, D)."""

    def __init__(self, model: nn.Module, image_size: tuple[int, int], patch_size: tuple[int, int], channels: int,
                 mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.image_size, self.channels = image_size, channels
        self.grid_size = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        if x.shape[1] == 1 and self.channels > 1:
            x = x.expand(-1, self.channels, -1, -1)
        x = (x - self.mean) / self.std
        hidden = self.model(pixel_values=x).last_hidden_state  # (N, prefix + L, D)
        return hidden[:, hidden.shape[1] - self.grid_size[0] * self.grid_size[1]:]


def hf_teacher(directory) -> Teacher:
    """A Hugging Face vision model saved with save_pretrained in `directory` (read offline); for
    CLIP-style models with a text half, the vision tower (its last_hidden_state, before the projection)."""
    from transformers import AutoModel

    directory = Path(directory)
    try:
        model = AutoModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the Hugging Face model in {directory}: {str(err).splitlines()[0]}") from None
    if hasattr(model, "vision_model"):
        model = model.vision_model
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "vision_config", cfg)
    if not all(hasattr(cfg, k) for k in ("image_size", "patch_size")):
        raise ConfigError(f"the Hugging Face model in {directory} is not a ViT-like vision model "
                          f"(its config has no image_size / patch_size)")
    channels = int(getattr(cfg, "num_channels", 3))
    pair = lambda v: (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))  # noqa: E731
    mean, std = _hf_pixel_statistics(directory, channels)
    adapter = HFPatchFeatures(model, pair(cfg.image_size), pair(cfg.patch_size), channels, mean, std)
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
    # a mimkit checkpoint: the one upward import of this floor, only when a run folder is named
    from ..engine.checkpoint import load_model

    try:
        model, config = load_model(path)
    except CheckpointError as err:
        raise ConfigError(f"{key}={path} is neither a mimkit checkpoint nor a Hugging Face model directory: "
                          f"{err}") from None
    return mimkit_teacher(model, name=f"{path} ({config.method})")


def as_teacher(teacher) -> Teacher:
    """A Teacher, a mimkit model with patch_features, a path, or a callable -> Teacher."""
    if isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, (str, Path)):
        return load_teacher(teacher)
    if isinstance(teacher, nn.Module):
        if hasattr(teacher, "patch_features"):
            return mimkit_teacher(teacher, name=type(teacher).__name__)
        return Teacher(teacher, teacher, grid_size=getattr(teacher, "grid_size", None), name=type(teacher).__name__)
    if callable(teacher):
        return Teacher(teacher, grid_size=getattr(teacher, "grid_size", None),
                       name=getattr(teacher, "__name__", "callable"))
    raise ConfigError(f"a teacher must be a path, a model or a callable images -> (N, L, D), got {type(teacher).__name__}")
