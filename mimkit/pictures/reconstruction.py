"""Reconstruction pictures: one row per image, one column per picture a model's `reconstruct` draws
(MAE: masked | reconstruction | original; a tokenizer: original | reconstruction)."""
import inspect

import torch
from PIL import Image

from ..errors import ConfigError
from .grid import image_grid, save_run_picture


def reconstruction_columns(model, images: torch.Tensor, seed: int = 0, **options) -> dict[str, torch.Tensor]:
    """images (N, C, H, W) in [0, 1] -> the named picture columns, in order, of
    `model.reconstruct(images, **options)`: its entries that are (N, C, H, W) images (other
    entries, such as MAE's mask (N, L), are not columns).

    Options set to None are left out; an option the model's reconstruct does not take is a
    ConfigError naming it. The model runs in eval mode under no_grad with torch's RNG seeded from
    `seed` (and restored afterwards), so the same seed draws the same random masks.
    """
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(model.reconstruct).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in options if k not in accepted and not takes_any]
    if unknown:
        raise ConfigError(f"{type(model).__name__}.reconstruct takes no option {unknown[0]!r}")
    was_training = model.training
    model.eval()
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.reconstruct(images, **options)
    finally:
        model.train(was_training)
    return {name: value for name, value in out.items()
            if isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == images.shape[0]}


def reconstruction_grid(model, images: torch.Tensor, seed: int = 0, scale: int = 4, **options) -> Image.Image:
    """The picture of `reconstruction_columns(model, images, seed, **options)`: one row per image."""
    columns = reconstruction_columns(model, images, seed=seed, **options)
    return image_grid(list(columns.values()), scale=scale)


class ReconstructionCallback:
    """Trainer callback: every `every` steps, write RUN/pictures/reconstruction_step_XXXXXXXX.png
    for a fixed set of images (the first n of a dataset, un-augmented)."""

    def __init__(self, images: torch.Tensor, every: int, seed: int = 0):
        self.images, self.every, self.seed = images, every, seed

    def __call__(self, trainer, step: int) -> None:
        if self.every <= 0 or (step % self.every and step != trainer.tc.steps):
            return
        picture = reconstruction_grid(trainer.model, self.images.to(trainer.device), seed=self.seed)
        save_run_picture(picture, trainer.run_dir, f"reconstruction_step_{step:08d}.png")
