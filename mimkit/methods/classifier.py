"""A small convolutional image classifier: the feature network of FID / IS / precision-recall on
small data, and the classifier that Classification Accuracy Score (CAS) trains on generated images.

Inception-v3 (the standard FID network) sees 299 px ImageNet photos; on 28 px grey images a network
trained on the dataset itself is the usual substitute, and reports must name it. Architecture:
a VGG-style stack of stages; each stage is `blocks_per_stage` x (3x3 conv -> norm -> ReLU) at one
width, followed by 2x2 max-pooling except after the last stage; then global average pooling (the
features, (N, widths[-1])), dropout and a linear layer (the logits).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn import to_pair
from .base import Method
from .output import Output
from .pixel_statistics import check_pixel_statistics, register_pixel_statistics

NORMS = ("batch", "group")


@dataclass
class ClassifierConfig:
    """Architecture and objective of a Classifier. Images enter in [0, 1] and are normalised with
    pixel_mean / pixel_std (see mimkit.methods.pixel_statistics: empty = measured on the run's
    images when training starts).

    widths: channels of each stage (one 2x pool between consecutive stages).
    norm: "batch" (BatchNorm2d) or "group" (GroupNorm with `groups` groups; batch-size independent).
    label_smoothing: keep 0 for a network that scores the Inception Score: smoothing caps its
        confidence (measured on Fashion-MNIST: IS of the real test set 5.2 with 0.1, 8.1 with 0,
        at the same 91.9% accuracy).
    """

    img_size: int | tuple[int, int] = 28
    in_chans: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (24, 48, 96, 192)
    blocks_per_stage: int = 1
    norm: str = "batch"
    groups: int = 8
    dropout: float = 0.2
    label_smoothing: float = 0.0
    pixel_mean: tuple[float, ...] = ()
    pixel_std: tuple[float, ...] = ()

    def validate(self, prefix: str = "model") -> None:
        if not self.widths or min(self.widths) <= 0:
            raise ConfigError(f"{prefix}.widths must be a non-empty list of positive ints, got {list(self.widths)}")
        sizes = to_pair(self.img_size)
        if min(sizes) < 2 ** (len(self.widths) - 1):
            raise ConfigError(f"{prefix}.img_size {list(sizes)} is too small for {len(self.widths)} stages "
                              f"(each pool halves it); use fewer {prefix}.widths")
        for name in ("in_chans", "blocks_per_stage"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{prefix}.{name} must be positive, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ConfigError(f"{prefix}.num_classes must be >= 2, got {self.num_classes}")
        if self.norm not in NORMS:
            raise ConfigError(f"{prefix}.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.norm == "group" and (self.groups <= 0 or any(w % self.groups for w in self.widths)):
            raise ConfigError(f"{prefix}.groups={self.groups} must be positive and divide every width "
                              f"{list(self.widths)}")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{prefix}.{name} must be in [0, 1), got {getattr(self, name)}")
        check_pixel_statistics(self, prefix)


def conv_norm_relu(c_in: int, c_out: int, config: ClassifierConfig) -> nn.Sequential:
    """3x3 conv (no bias: the norm has one) -> BatchNorm2d / GroupNorm -> ReLU; keeps H x W."""
    norm = nn.BatchNorm2d(c_out) if config.norm == "batch" else nn.GroupNorm(config.groups, c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), norm, nn.ReLU(inplace=True))


class Classifier(Method):
    """Conv stages -> global average pool -> dropout -> linear; trained with cross-entropy."""

    method_name, config_class = "classifier", ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        layers, c_in = [], c.in_chans
        for i, width in enumerate(c.widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(c.blocks_per_stage):
                layers.append(conv_norm_relu(c_in, width, c))
                c_in = width
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c_in, c.num_classes)
        register_pixel_statistics(self, c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan-out, for ReLU), unit norms, N(0, 0.01) head with zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def feature_dim(self) -> int:
        return self.config.widths[-1]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> last stage's activations (N, widths[-1], h, w)."""
        return self.body((images - self.pixel_mean) / self.pixel_std)

    def features(self, images: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> penultimate features (N, widths[-1]): the globally
        average-pooled ("mean") or max-pooled ("max") last feature map (the head's input is "mean")."""
        fmap = self.feature_map(images)
        if pool == "mean":
            return fmap.mean(dim=(2, 3))
        if pool == "max":
            return fmap.amax(dim=(2, 3))
        raise ValueError(f"pool must be 'mean' or 'max' for a Classifier, got {pool!r}")

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, C, H, W) in [0, 1] -> (features (N, widths[-1]), logits (N, num_classes)) in one pass."""
        feats = self.features(images, "mean")
        return feats, self.head(self.dropout(feats))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> class logits (N, num_classes)."""
        return self.features_and_logits(images)[1]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, **_) -> Output:
        """images (N, C, H, W) in [0, 1], labels (N,) int64 -> Output(loss, logs={loss, accuracy});
        accuracy is the batch top-1 in % (under dropout and augmentation while training)."""
        if labels is None or (labels < 0).any():
            raise ValueError("a Classifier needs class labels >= 0 for every image; the dataset has unlabelled "
                             "images (label -1): use a labelled dataset (class sub-folders, IDX labels)")
        logits = self.logits(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(1) == labels).float().mean() * 100
        return Output(loss=loss, logs={"loss": loss.detach(), "accuracy": accuracy.detach()})


# ------------------------------------------------------------------ presets
def fmnist_recipe(steps: int, batch_size: int = 128, lr: float = 4e-3, **model) -> dict:
    """A 28 px grey classifier for Fashion-MNIST on a CPU: horizontal flips only (the crop covers the
    whole image: in short runs, crops cost accuracy), AdamW with a 5% warmup then cosine decay."""
    base = {"img_size": 28, "in_chans": 1, "num_classes": 10, "widths": [24, 48, 96, 192], "blocks_per_stage": 1,
            "norm": "batch", "dropout": 0.2, "label_smoothing": 0.0}
    base.update(model)
    return {
        "method": "classifier",
        "model": base,
        "data": {"name": "fashion-mnist", "image_size": 28, "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0]},
        "optim": {"lr": lr, "weight_decay": 0.05, "betas": [0.9, 0.999], "warmup_steps": steps // 20},
        "train": {"steps": steps, "batch_size": batch_size, "ckpt_every": steps // 4, "log_every": 50},
    }


PRESETS = {
    "classifier_fmnist": fmnist_recipe(2000),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "classifier_fmnist": (
        "the feature network of FID / IS / precision-recall and the CAS classifier on Fashion-MNIST: 2000 steps of "
        "128 (~4 epochs); measured 91.8% test top-1"),
}
