"""Reconstruction pictures: masked input | reconstruction (visible patches pasted back) | original."""
from pathlib import Path

import torch
from PIL import Image

from .grid import image_grid, save_grid


def reconstruction_grid(model, images: torch.Tensor, seed: int = 0, mask_ratio: float | None = None,
                        scale: int = 4) -> Image.Image:
    """images (N, C, H, W) in [0, 1] -> a picture with one row per image and three columns.

    `model.reconstruct(images, noise=..., mask_ratio=...)` must return a dict with "masked",
    "reconstruction" and "original" (N, C, H, W); the mask noise comes from `seed`, so the same
    seed draws the same masks.
    """
    generator = torch.Generator().manual_seed(seed)
    length = model.grid_size[0] * model.grid_size[1]
    noise = torch.rand(images.shape[0], length, generator=generator).to(images.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.reconstruct(images, noise=noise, mask_ratio=mask_ratio)
    finally:
        model.train(was_training)
    return image_grid([out["masked"], out["reconstruction"], out["original"]], scale=scale)


class ReconstructionCallback:
    """Trainer callback: every `every` steps, write RUN/pictures/reconstruction_step_XXXXXXXX.png
    for a fixed set of images (the first n of a dataset, un-augmented)."""

    def __init__(self, images: torch.Tensor, every: int, seed: int = 0):
        self.images, self.every, self.seed = images, every, seed

    def __call__(self, trainer, step: int) -> None:
        if self.every <= 0 or (step % self.every and step != trainer.tc.steps):
            return
        picture = reconstruction_grid(trainer.model, self.images.to(trainer.device), seed=self.seed)
        save_grid(picture, Path(trainer.run_dir) / "pictures" / f"reconstruction_step_{step:08d}.png")
