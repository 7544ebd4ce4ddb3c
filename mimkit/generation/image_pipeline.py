"""MaskedImagePipeline: a masked token model + a sampler, called like a diffusers pipeline and
returning PIL images as well as tensors.

    pipe = MaskedImagePipeline.from_pretrained("runs/maskgit_fmnist", steps=12)
    out = pipe(n=8, labels=3, generator=torch.Generator().manual_seed(0))
    out.images[0].save("sample.png")      # out.tensors: (8, C, H, W) in [0, 1]
"""
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import pipelines
from .sampler import MaskedTokenSampler
from .token_model import check_token_model


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [0, 1] with C = 1 (grey) or 3 (RGB) -> N PIL images."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got {tuple(images.shape)}")
    arrays = (images.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]  # uint8: "L" or "RGB"


@dataclass
class PipelineOutput:
    """tensors: (N, C, H, W) in [0, 1]; images: the same as N PIL images."""

    tensors: torch.Tensor

    @property
    def images(self) -> list[Image.Image]:
        return to_pil(self.tensors)


class MaskedImagePipeline:
    """A masked token model (MaskGIT, MAGE) with the sampler settings to decode it."""

    def __init__(self, model, sampler: MaskedTokenSampler | None = None):
        check_token_model(model)
        self.model, self.sampler = model, sampler or MaskedTokenSampler()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        sampler: MaskedTokenSampler | None = None, **sampler_options) -> "MaskedImagePipeline":
        """Load a save_pretrained folder, checkpoint (folder, run folder or model.safetensors) or a
        Hugging Face repo id already in the local cache; sampler_options (steps, schedule, ...)
        build the sampler when none is given."""
        from ..registry import from_pretrained

        model = from_pretrained(path, device=device)
        return cls(model, sampler or MaskedTokenSampler(**sampler_options))

    def __call__(self, n: int | None = None, labels: int | Sequence[int] | torch.Tensor | None = None,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> PipelineOutput:
        """Generate n images (or one per label); see mimkit.generation.generate."""
        return PipelineOutput(pipelines.generate(self.model, n, labels, self.sampler, generator, batch_size))

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, labels=None,
                generator: torch.Generator | None = None) -> PipelineOutput:
        """Fill the True pixels of mask (N, H, W); see mimkit.generation.inpaint."""
        return PipelineOutput(pipelines.inpaint(self.model, images, mask, labels, self.sampler, generator))

    def outpaint(self, images: torch.Tensor, side: str, amount: float | int, labels=None,
                 generator: torch.Generator | None = None) -> PipelineOutput:
        """Extend the images on `side`; see mimkit.generation.outpaint."""
        return PipelineOutput(pipelines.outpaint(self.model, images, side, amount, labels, self.sampler, generator))

    def edit(self, images: torch.Tensor, box: Sequence[int], label, generator: torch.Generator | None = None) \
            -> PipelineOutput:
        """Regenerate the box under class `label`; see mimkit.generation.edit."""
        return PipelineOutput(pipelines.edit(self.model, images, box, label, self.sampler, generator))
