"""Classification Accuracy Score (Ravuri & Vinyals, 2019): how useful generated images are as
training data. A fresh classifier is trained on generated images with the labels they were
generated for, then tested on real labelled images. A class-conditional model whose samples
look right but ignore the label, or cover only part of each class, scores low.

The classifier is mimkit's `Classifier` built from a given `ClassifierConfig`, trained from a
seeded init with AdamW (no decay on 1-D parameters), a linear warmup then cosine learning rate,
and no augmentation, so two generators are compared with exactly the same recipe. Small sample
sets get more epochs (at least `min_steps` optimiser steps): measured on Fashion-MNIST with 2000
real training images, 5 epochs (40 steps) gave 74% test accuracy and 20 epochs 85%.
"""
import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..engine.optim import build_adamw, warmup_cosine
from ..methods.classifier import Classifier, ClassifierConfig
from .linprobe import intra_op_threads


@dataclass
class CASResult:
    """accuracy: top-1 in % on the real images; train_accuracy: top-1 in % on the generated images
    it was trained on (eval mode); the trained classifier (on CPU, eval mode)."""

    accuracy: float
    train_accuracy: float
    epochs: int
    seconds: float
    classifier: Classifier


def _check_labelled(images: torch.Tensor, labels: torch.Tensor, config: ClassifierConfig, which: str) -> None:
    expected = (config.in_chans, *((config.img_size,) * 2 if isinstance(config.img_size, int) else config.img_size))
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{which} images must be (N, {', '.join(map(str, expected))}) to match the CAS "
                         f"classifier config (in_chans, img_size), got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{which} labels must be a tensor ({len(images)},), one per image, got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{which} labels must be integer class ids, got dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise ValueError(f"{which} labels must lie in [0, {config.num_classes}) (the config's num_classes), "
                         f"found {labels.min().item()}..{labels.max().item()}")


@torch.no_grad()
def classifier_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in % of `model` (in its current mode) on images (N, C, H, W), labels (N,)."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model.logits(images[start:start + batch_size].to(device, torch.float32))
        correct += (logits.argmax(1).cpu() == labels[start:start + batch_size].cpu()).sum().item()
    return 100.0 * correct / len(images)


def train_classifier(config: ClassifierConfig, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10,
                     batch_size: int = 256, lr: float = 4e-3, weight_decay: float = 0.05, warmup_fraction: float = 0.05,
                     seed: int = 0, device="cpu", progress: bool = True) -> Classifier:
    """A Classifier(config) trained for `epochs` epochs on images (N, C, H, W) in [0, 1] with labels
    (N,); returned in eval mode on `device`. The global RNG state is left untouched (init and
    shuffling are seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(config).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = build_adamw(model, lr, weight_decay, betas=(0.9, 0.999))
    n = len(images)
    # skip a last batch of one image: BatchNorm cannot take batch statistics from it
    steps_per_epoch = n // batch_size + (1 if n % batch_size > 1 else 0)
    total = epochs * steps_per_epoch
    warmup = int(warmup_fraction * total)
    model.train()
    step = 0
    with tqdm(total=total, desc="CAS classifier", disable=not progress, leave=False, unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = warmup_cosine(step, total, warmup, lr)
                out = model(images[idx].to(device, torch.float32), labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
    return model.eval()


def classification_accuracy_score(generated: torch.Tensor, generated_labels: torch.Tensor, real: torch.Tensor,
                                  real_labels: torch.Tensor, config: ClassifierConfig, *, epochs: int = 10,
                                  min_steps: int = 500, batch_size: int = 256, lr: float = 4e-3,
                                  weight_decay: float = 0.05, warmup_fraction: float = 0.05, seed: int = 0,
                                  device="cpu", num_threads: int | None = None, progress: bool = True) -> CASResult:
    """Train a fresh Classifier(config) on generated images (N, C, H, W) in [0, 1] with the labels
    they were generated for (N,), test it on real images (M, C, H, W) with labels (M,).

    Args:
        config: the classifier's architecture; in_chans / img_size must match the images and every
            label must be < num_classes.
        epochs, batch_size, lr, weight_decay, warmup_fraction: the AdamW recipe (peak lr after a
            linear warmup over warmup_fraction of the steps, then half-cosine to 0).
        min_steps: train for more than `epochs` epochs when they would make fewer optimiser steps
            than this (few samples); 0 = exactly `epochs`.
        seed: seeds the init and the shuffling (the global RNG is not touched).
        device: where to train; num_threads: CPU threads while training (None: torch's setting).

    Returns:
        CASResult; `.accuracy` is the CAS in %.
    """
    _check_labelled(generated, generated_labels, config, "generated")
    _check_labelled(real, real_labels, config, "real")
    if len(generated) < 2 or len(real) == 0:
        raise ValueError(f"CAS needs at least 2 generated and 1 real image, got {len(generated)} and {len(real)}")
    if epochs <= 0 or batch_size <= 0 or lr <= 0 or min_steps < 0:
        raise ValueError(f"epochs, batch_size and lr must be positive and min_steps >= 0, got {epochs}, "
                         f"{batch_size}, {lr}, {min_steps}")
    n = len(generated)
    steps_per_epoch = n // batch_size + (1 if n % batch_size > 1 else 0)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    device = torch.device(device)
    started = time.perf_counter()
    with intra_op_threads(num_threads if device.type == "cpu" else None):
        model = train_classifier(config, generated, generated_labels.long(), epochs=epochs, batch_size=batch_size,
                                 lr=lr, weight_decay=weight_decay, warmup_fraction=warmup_fraction, seed=seed,
                                 device=device, progress=progress)
        accuracy = classifier_accuracy(model, real, real_labels.long())
        train_accuracy = classifier_accuracy(model, generated, generated_labels.long())
    seconds = time.perf_counter() - started
    return CASResult(accuracy=accuracy, train_accuracy=train_accuracy, epochs=epochs, seconds=seconds,
                     classifier=model.cpu())
