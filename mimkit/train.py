"""`train(config)`: build the data, model and Trainer a RunConfig describes and run it."""
import dataclasses
import os
from pathlib import Path

import torch

from .data import build_augment, build_dataset
from .data.augment import unaugmented
from .data.collate import SkippedItem
from .data.device_batch import images_to_float
from .data.statistics import pixel_statistics_of
from .engine.resume_check import fill_from_saved, resumable_checkpoint
from .engine.trainer import Trainer
from .errors import CheckpointError, ConfigError, DataError
from .files.checkpoint_folder import load_weights, read_config, resolve_checkpoint
from .pictures import ReconstructionCallback, SampleGridCallback
from .registry import RunConfig, build_model, method_entry
from .tokenizers import TokenCacheDataset


def build_callbacks(model, config: RunConfig, dataset) -> list:
    """Periodic pictures: sample grids of token models, reconstructions of methods that draw them."""
    if not config.train.picture_every:
        return []
    if model.generates:
        return [SampleGridCallback(config.train.picture_every, seed=config.train.seed)]
    if not model.reconstructs_pixels:
        return []
    items = readable_items(dataset, 8)
    if not items or "images" not in items[0]:  # nothing readable near the start, or no images (tokens)
        return []
    images = images_to_float(torch.stack([item["images"] for item in items]))  # uint8 from decoded sources
    return [ReconstructionCallback(images, config.train.picture_every, seed=config.train.seed)]


def readable_items(dataset, count: int, scan: int = 64) -> list:
    """The first `count` items among the first `scan` of `dataset` that are not unreadable files
    skipped by data.on_error=skip (SkippedItem); fewer when fewer are readable."""
    items = []
    for index in range(min(scan, len(dataset))):
        item = dataset[index]
        if not isinstance(item, SkippedItem):
            items.append(item)
            if len(items) == count:
                break
    return items


def resolve_tokenizer(config: RunConfig) -> tuple[RunConfig, Path | None]:
    """For token models (a model config with `tokenizer`): the run config with the tokenizer
    checkpoint's {"method", "model"} copied into model.tokenizer_config, and that checkpoint."""
    model = config.model
    if not method_entry(config.method).model_class.frozen_tokenizer:
        return config, None
    if not model.tokenizer:
        if model.tokenizer_config:  # e.g. a config.json of a token model: weights come from its checkpoint
            return config, None
        raise ConfigError("model.tokenizer is not set: give the run folder or checkpoint of a trained tokenizer, "
                          "e.g. model.tokenizer=runs/vq_fmnist (made by `mimkit train vqgan_fmnist --out runs/vq_fmnist`)")
    try:
        ckpt = resolve_checkpoint(model.tokenizer)
    except CheckpointError as err:
        raise ConfigError(f"model.tokenizer: {err}") from None
    saved = read_config(ckpt)
    spec = {"method": saved.get("method"), "model": saved.get("model")}
    if model.tokenizer_config and model.tokenizer_config != spec:
        raise ConfigError(f"model.tokenizer_config differs from the config of model.tokenizer={model.tokenizer}; "
                          "remove model.tokenizer_config (it is filled in from the tokenizer's checkpoint)")
    return dataclasses.replace(config, model=dataclasses.replace(model, tokenizer_config=spec)), ckpt


def check_token_cache(model, dataset) -> None:
    """A token cache must come from the model's own tokenizer (same weights, same grid)."""
    if not isinstance(dataset, TokenCacheDataset):
        return
    if not model.frozen_tokenizer:
        raise DataError(f"{dataset.cache_dir} is a token cache, but this method trains on images; "
                        "set data.name to an image source")
    expected = model.tokenizer.fingerprint()
    if dataset.fingerprint != expected:
        raise DataError(f"{dataset.cache_dir} was made by tokenizer {dataset.fingerprint[:12]}, but model.tokenizer "
                        f"is {expected[:12]}; re-run `mimkit tokenize` with model.tokenizer's checkpoint")


def resolve_teacher(config: RunConfig):
    """For distilling tokenizers (a model config with `teacher_dim`, VQ-KD): the run config with
    model.teacher_dim read from the loaded frozen teacher, and that teacher (else None)."""
    model = config.model
    if not method_entry(config.method).model_class.distils_teacher:
        return config, None
    from .nn import to_pair
    from .teacher_loading import load_teacher

    teacher = load_teacher(model.teacher, "model.teacher")
    _, dim = teacher.output_shape(model.in_chans, to_pair(model.img_size))
    if model.teacher_dim and model.teacher_dim != dim:
        raise ConfigError(f"model.teacher_dim={model.teacher_dim} but the teacher {model.teacher} gives {dim}-d "
                          f"features; set model.teacher_dim={dim} or 0")
    return dataclasses.replace(config, model=dataclasses.replace(model, teacher_dim=dim)), teacher


def train(config: RunConfig, resume: bool = False, allow_change=()) -> Path:
    """Pretrain the model `config` describes; returns the run folder.

    resume: continue the run folder's latest checkpoint, by the rules of mimkit.engine.resume_check
    (refused without one; a no-op when it is at train.steps; the recipe must be the saved one).
    allow_change: with resume, the recipe keys that may differ from the checkpoint's (e.g. "optim.blr").
    """
    if allow_change and not resume:
        raise ConfigError("--allow-change only applies to a resumed run (--resume)")
    ckpt = resumable_checkpoint(config.train.out_dir) if resume else None
    config, tokenizer_ckpt = resolve_tokenizer(config)
    config, teacher = resolve_teacher(config)
    if ckpt is not None:  # fields filled in at the run's start keep their saved values
        config = fill_from_saved(config, read_config(ckpt))
    check_views(config)
    dataset = build_dataset(config.data, channels=image_channels(config),
                            min_side=getattr(config.model, "patch_size", None) or 1, training=True)
    with unaugmented(dataset):  # statistics of the images, not of random crops
        config = measure_pixel_statistics(config, dataset)
    torch.manual_seed(config.train.seed)  # the model's init is part of the seeded run
    model = build_model(config.method, config.model)
    if tokenizer_ckpt is not None:
        load_weights(model.tokenizer, tokenizer_ckpt)
    if teacher is not None:
        model.attach_teacher(teacher)  # frozen, outside the state dict
    check_token_cache(model, dataset)
    augment = None if isinstance(dataset, TokenCacheDataset) else build_augment(config.data, dataset)
    with unaugmented(dataset):  # pictures show the un-augmented images
        callbacks = build_callbacks(model, config, dataset)
    trainer = Trainer(model, config, dataset, augment=augment, callbacks=callbacks)
    trainer.fit(resume=resume, allow_change=allow_change)
    return trainer.run_dir


def measure_pixel_statistics(config: RunConfig, dataset) -> RunConfig:
    """For pixel models whose config leaves pixel_mean and pixel_std empty: the run config with both
    measured on a seeded sample of the run's own images (stored in config.json with the run); a
    resumed run has them from its checkpoint already. Set only one of the two is a ConfigError."""
    model = config.model
    if not hasattr(model, "pixel_mean"):  # a config field, not a capability: token models have none
        return config
    if bool(model.pixel_mean) != bool(model.pixel_std):
        raise ConfigError("set both model.pixel_mean and model.pixel_std, or neither (both are then measured "
                          "on the run's images)")
    if model.pixel_mean:
        return config
    mean, std, count = pixel_statistics_of(dataset, seed=config.train.seed)
    if os.environ.get("RANK", "0") == "0":  # every torchrun rank measures the same; one says so
        print(f"pixel statistics of {getattr(dataset, 'source', config.data.name)} measured on {count} images: "
              f"model.pixel_mean={list(mean)} model.pixel_std={list(std)}", flush=True)
    return dataclasses.replace(config, model=dataclasses.replace(model, pixel_mean=mean, pixel_std=std))


def check_views(config: RunConfig) -> None:
    """data.views must be the number of views per image the method trains on (its input_views)."""
    views = method_entry(config.method).model_class.input_views(config.model)
    if config.data.views != views:
        raise ConfigError(f"this {config.method} model trains on {views} view(s) of every image but data.views="
                          f"{config.data.views}; set data.views={views}")


def image_channels(config: RunConfig) -> int:
    """Channels of the model's input images (a token model's are its tokenizer's)."""
    if hasattr(config.model, "in_chans"):
        return config.model.in_chans
    return int(config.model.tokenizer_config["model"].get("in_chans", 3))
