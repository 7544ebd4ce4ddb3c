"""`train(config)`: build the data, model and Trainer a RunConfig describes and run it."""
from pathlib import Path

import torch

from .config import RunConfig
from .data import build_augment, build_dataset
from .engine.trainer import Trainer
from .methods import build_model
from .pictures import ReconstructionCallback


def build_callbacks(model, config: RunConfig, dataset) -> list:
    """Periodic pictures for methods that can draw reconstructions."""
    if not config.train.picture_every or not hasattr(model, "reconstruct"):
        return []
    n = min(8, len(dataset))
    images = torch.stack([dataset[i]["images"] for i in range(n)])
    return [ReconstructionCallback(images, config.train.picture_every, seed=config.train.seed)]


def train(config: RunConfig, resume: bool = False) -> Path:
    """Pretrain the model `config` describes; returns the run folder."""
    torch.manual_seed(config.train.seed)  # the model's init is part of the seeded run
    model = build_model(config.method, config.model)
    dataset = build_dataset(config.data, channels=config.model.in_chans)
    augment = build_augment(config.data)
    trainer = Trainer(model, config, dataset, augment=augment, callbacks=build_callbacks(model, config, dataset))
    trainer.fit(resume=resume)
    return trainer.run_dir
