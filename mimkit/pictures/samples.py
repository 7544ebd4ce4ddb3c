"""Sample pictures of masked token models during training: a fixed-seed grid every N steps."""

import torch

from .grid import image_grid, save_run_picture, tile


class SampleGridCallback:
    """Trainer callback: every `every` steps, write RUN/pictures/samples_step_XXXXXXXX.png.

    A class-conditional model draws one row per class (`per_row` samples each); an unconditional
    one a per_row x per_row grid. Sampling uses `mimkit.generation.generate` with `steps` decoding
    steps and its own seeded generator, so the training RNG is untouched and every picture of a
    run shows the same noise.
    """

    def __init__(self, every: int, per_row: int = 8, steps: int = 12, seed: int = 0, scale: int = 2):
        self.every, self.per_row, self.steps, self.seed, self.scale = every, per_row, steps, seed, scale

    def __call__(self, trainer, step: int) -> None:
        from ..generation import MaskedTokenSampler, generate

        if self.every <= 0 or (step % self.every and step != trainer.tc.steps):
            return
        model = trainer.model
        if model.num_classes:
            labels = torch.arange(model.num_classes).repeat_interleave(self.per_row)
        else:
            labels = None
        n = len(labels) if labels is not None else self.per_row ** 2
        was_training = model.training
        try:
            images = generate(model, n, labels, sampler=MaskedTokenSampler(steps=self.steps),
                              generator=torch.Generator(trainer.device).manual_seed(self.seed))
        finally:
            model.train(was_training)
        picture = image_grid(tile(images, self.per_row), scale=self.scale)
        save_run_picture(picture, trainer.run_dir, f"samples_step_{step:08d}.png")
