"""The network whose features FID and precision/recall compare and whose class probabilities the
Inception Score uses, behind one small interface so that any of them can be plugged in:

    net = FeatureNetwork.from_checkpoint("runs/classifier_fmnist")        # a mimkit classifier
    net = FeatureNetwork.from_torchscript("pt_inception-2015-12-05.pt")    # a user's Inception-v3
    feats, probs = net.features(images), net.probabilities(images)         # (N, D), (N, C)

Scores from different feature networks are not comparable, so every report carries `net.name`.

TorchScript convention (what `from_torchscript` expects of the file; export a small wrapper
module with torch.jit.script / torch.jit.trace and `.save(path)` to match it):
  input  (B, 3, 299, 299) float32. mimkit resizes the [0, 1] images to 299 x 299 (bilinear,
         antialiased), repeats a grey channel to 3, and maps [0, 1] linearly onto `input_range`
         (default (0, 1): the module does its own normalisation, as pytorch-fid's InceptionV3,
         which scales [0, 1] to [-1, 1] inside; use (-1, 1) or (0, 255) for modules that do not).
  output either a tuple (pool features (B, 2048), logits (B, 1008 or 1000)), or a features
         tensor (B, D) alone (then only FID and precision/recall are available, not IS).
         Probabilities are softmax(logits) over all of the module's classes (the TF Inception
         graph behind the reference IS has 1008, 8 of them unused).
"""
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.resize import fit_square
from ..errors import CheckpointError, MimkitError
from ..nn.device import model_device

INCEPTION_SIZE = 299


class FeatureNetwork:
    """A frozen network: images (N, C, H, W) in [0, 1] -> features (N, D) and probabilities (N, C).

    module: the nn.Module (or ScriptModule) run in eval mode under no_grad, on its own device;
        its train flags are restored after each call.
    run: batch on the module's device -> (features (B, D), logits (B, C) or None).
    name: how reports name the network. batch_size: images per forward pass.
    """

    def __init__(self, module: nn.Module, run: Callable, name: str, batch_size: int = 256):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.module, self.run, self.name, self.batch_size = module, run, name, batch_size

    def __repr__(self) -> str:
        return f"FeatureNetwork({self.name!r})"

    @property
    def device(self) -> torch.device:
        return model_device(self.module)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_classifier(cls, model: nn.Module, name: str | None = None, batch_size: int = 512) -> "FeatureNetwork":
        """A model with `features(images, pool="mean") -> (B, D)` and (optionally, for IS)
        `logits(images) -> (B, C)`, or both at once from `features_and_logits(images)` (mimkit's
        Classifier). Images of another size are fitted to its square input
        (`mimkit.data.resize.fit_square`: centre square, antialiased bicubic); another channel
        count is an error."""
        if not hasattr(model, "features"):
            raise TypeError(f"{type(model).__name__} has no features(images, pool) method")
        expected = expected_input(model)

        def run(images):
            if expected is not None and tuple(images.shape[1:]) != expected:
                c, h, w = expected
                if images.shape[1] != c or h != w:
                    raise ValueError(f"the feature network takes images (N, {c}, {h}, {w}), got "
                                     f"{tuple(images.shape)}; convert the channels or use a network trained on them")
                images = fit_square(images, h)  # as the Inception path resizes to 299
            if hasattr(model, "features_and_logits"):
                return model.features_and_logits(images)
            return model.features(images, pool="mean"), model.logits(images) if hasattr(model, "logits") else None

        return cls(model, run, name or f"{type(model).__name__} (in memory)", batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device="cpu", batch_size: int = 512) -> "FeatureNetwork":
        """A mimkit checkpoint (folder, run folder or model.safetensors), e.g. a `classifier_fmnist`
        run; named "<method> <checkpoint folder>"."""
        from ..registry import load_model
        from ..files.checkpoint_folder import resolve_checkpoint

        model, config = load_model(path, device)
        return cls.from_classifier(model, f"{config.method} {resolve_checkpoint(path)}", batch_size)

    @classmethod
    def from_torchscript(cls, path: str | Path, device="cpu", batch_size: int = 64,
                         input_range: tuple[float, float] = (0.0, 1.0), name: str | None = None) -> "FeatureNetwork":
        """A TorchScript Inception-v3 following the convention of this module's docstring."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"TorchScript feature network {path} does not exist; export an Inception-v3 "
                                  f"with torch.jit.script(model).save(path) (see mimkit.eval.feature_network)")
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as err:  # zip / pickle / TorchScript format errors of all kinds
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path} is not a TorchScript file ({first}); save the network with "
                                  f"torch.jit.script(model).save(path) or torch.jit.trace(model, example).save(path)"
                                  ) from None
        lo, hi = input_range

        def run(images):
            x = to_inception_input(images) * (hi - lo) + lo
            out = module(x)
            if isinstance(out, torch.Tensor):
                return out, None
            if isinstance(out, (tuple, list)) and len(out) == 2:
                return out[0], out[1]
            raise MimkitError(f"{path} returned {type(out).__name__}; a feature network must return features "
                              f"(B, D) or a tuple (features (B, D), logits (B, C))")

        return cls(module, run, name or f"torchscript {path}", batch_size)

    # ------------------------------------------------------------------- calls
    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor, progress: bool = False,
                            desc: str = "features") -> tuple[torch.Tensor, torch.Tensor | None]:
        """images (N, C, H, W) in [0, 1] (any device) -> (features (N, D), logits (N, K) or None),
        float32 on CPU, in one pass over the network."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor (N, C, H, W) in [0, 1], got {shape}")
        if len(images) == 0:
            raise ValueError("images are empty")
        device = self.device
        flags = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        feats, logits = [], []
        try:
            starts = range(0, len(images), self.batch_size)
            for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
                batch = images[start:start + self.batch_size].to(device, torch.float32)
                f, z = self.run(batch)
                if f.ndim != 2 or f.shape[0] != batch.shape[0]:
                    raise MimkitError(f"feature network {self.name} returned features of shape {tuple(f.shape)}; "
                                      f"expected ({batch.shape[0]}, D)")
                feats.append(f.float().cpu())
                if z is not None:
                    logits.append(z.float().cpu())
        finally:
            for module, training in flags:
                module.training = training
        return torch.cat(feats), torch.cat(logits) if logits else None

    def features(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> features (N, D) float32 on CPU."""
        return self.features_and_logits(images, progress)[0]

    def probabilities(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> class probabilities softmax(logits) (N, K) float32 on CPU."""
        logits = self.features_and_logits(images, progress)[1]
        if logits is None:
            raise MimkitError(f"feature network {self.name} gives no class logits, so no Inception Score")
        return logits.softmax(dim=1)


def expected_input(model: nn.Module) -> tuple[int, int, int] | None:
    """(C, H, W) a mimkit model's config says it takes (in_chans, img_size), or None if it does not say."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "in_chans") or not hasattr(config, "img_size"):
        return None
    size = config.img_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (config.in_chans, h, w)


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """images (B, 1 or 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [0, 1] (bilinear, antialiased)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ValueError(f"an Inception network takes grey or RGB images, got {images.shape[1]} channels")
    if images.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        images = F.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                               align_corners=False, antialias=True)
    return images
