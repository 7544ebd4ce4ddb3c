"""Teachers for VQ-KD: frozen models that give one feature vector per image patch.

A `Teacher` maps images (N, C, H, W) in [0, 1] to features (N, L, D), L = h * w patches in
row-major order, with no gradient and always in eval mode. Three ways to get one:

    mimkit_teacher(mae)                     # a mimkit model with patch_features (e.g. an MAE)
    Teacher(HFPatchFeatures(...), ...)      # a Hugging Face vision model (CLIP: projected patch tokens)
    Teacher(my_fn, grid_size=(7, 7))        # any callable images -> (N, L, D)
A path (a run folder or a Hugging Face model directory) becomes a Teacher where runs are assembled:
mimkit.teacher_loading.load_teacher.

Each adapter prepares the [0, 1] images its own way (a mimkit MAE normalises them itself; a Hugging
Face model gets them resized to its image_size, grey repeated to its channels and normalised with
the image_mean / image_std of its preprocessor_config.json, 0.5 / 0.5 when there is none).
"""
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


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


class HFPatchFeatures(nn.Module):
    """A Hugging Face vision model as images in [0, 1] -> per-patch features (N, L, D).

    The patch tokens are last_hidden_state without its leading non-patch tokens (cls, distillation or
    register tokens). With `head` (a module applied to each patch token) they are head(patch tokens).

    Which target each kind of model gives (mimkit.teacher_loading.hf_teacher picks it):
    - a CLIP model (a vision tower plus `visual_projection`, transformers' CLIPModel): head =
      visual_projection(post_layernorm(.)), so D is the joint image-text embedding size (512 for
      ViT-B/16). This is BEiT v2's VQ-KD target: its CLIP teacher layer-norms the final patch tokens
      (ln_post) and multiplies them by the visual projection (proj). CLIP's last_hidden_state is taken
      before post_layernorm and has no projection (768-d for ViT-B), which is a different target.
    - any other vision model (ViT, DINO, DINOv2, ...): no head, the last_hidden_state patch tokens,
      which these models already give after their final layer norm (BEiT v2's DINO teacher also uses
      the final normed patch tokens).
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int], patch_size: tuple[int, int], channels: int,
                 mean: torch.Tensor, std: torch.Tensor, head: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.head = head
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
        patches = hidden[:, hidden.shape[1] - self.grid_size[0] * self.grid_size[1]:]
        return patches if self.head is None else self.head(patches)


def as_teacher(teacher) -> Teacher:
    """A Teacher, a mimkit model with patch_features, a path, or a callable -> Teacher."""
    if isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, (str, Path)):
        raise ConfigError(f"the teacher {teacher} is a path: load it first with "
                          "mimkit.teacher_loading.load_teacher (runs assemble their teachers there)")
    if isinstance(teacher, nn.Module):
        if hasattr(teacher, "patch_features"):
            return mimkit_teacher(teacher, name=type(teacher).__name__)
        return Teacher(teacher, teacher, grid_size=getattr(teacher, "grid_size", None), name=type(teacher).__name__)
    if callable(teacher):
        return Teacher(teacher, grid_size=getattr(teacher, "grid_size", None),
                       name=getattr(teacher, "__name__", "callable"))
    raise ConfigError(f"a teacher must be a path, a model or a callable images -> (N, L, D), got {type(teacher).__name__}")
