"""LPIPS-style perceptual distance on the features of a frozen VGG16, loaded from a user file.

distance(x, y) = sum over the five VGG16 stages (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) of
the spatial mean of  sum_c w_c * (f_c(x) / ||f(x)|| - f_c(y) / ||f(y)||)^2  (unit-normalised
channels, one linear weight per channel), inputs in [-1, 1] shifted/scaled as LPIPS does. Grey
images are repeated to three channels.

No weights ship with mimkit and none are downloaded: `load_perceptual_network(path)` reads a file
(safetensors, or a torch.save file read with weights_only=True) holding either
- LPIPS / taming-transformers keys: `net.slice{1..5}.{i}.weight|bias` and `lin{0..4}.model.1.weight`
  (any `loss.perceptual_loss.` / `perceptual_loss.` prefix is taken off, so a taming VQGAN
  checkpoint itself works), or
- torchvision VGG16 keys `features.{i}.weight|bias` (the classifier is ignored); without `lin*`
  weights every channel weighs 1.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError

# torchvision's vgg16().features: convolutions (out channels) and "M" = 2x2 max pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
SLICE_ENDS = (4, 9, 16, 23, 30)  # features[a:b] of each LPIPS slice (ends after relu1_2, ..., relu5_3)
STAGE_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
PREFIXES = ("loss.perceptual_loss.", "perceptual_loss.")


class LinearWeights(nn.Module):
    """LPIPS's per-stage channel weights: key `model.1.weight` (1, C, 1, 1) (index 0 was dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))
        nn.init.ones_(self.model[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PerceptualDistance(nn.Module):
    """Frozen LPIPS-style distance: forward(x, y) in [-1, 1] (N, C, H, W) -> (N,) distances."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        features, channels = [], 3
        for item in VGG16_LAYOUT:
            if item == "M":
                features.append(nn.MaxPool2d(2, 2))
            else:
                features += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.net = nn.Module()
        start = 0
        for i, end in enumerate(SLICE_ENDS):
            stage = nn.Sequential()
            for j in range(start, end):  # keep torchvision's indices as names, as LPIPS does
                stage.add_module(str(j), features[j])
            setattr(self.net, f"slice{i + 1}", stage)
            start = end
        for i, c in enumerate(STAGE_CHANNELS):
            setattr(self, f"lin{i}", LinearWeights(c))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always in eval mode: a fixed loss network
        return super().train(False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = (x - self.shift) / self.scale
        out = []
        for i in range(len(SLICE_ENDS)):
            h = getattr(self.net, f"slice{i + 1}")(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i, (fx, fy) in enumerate(zip(self.stages(x), self.stages(y))):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}")((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total


def lpips_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in LPIPS / taming / torchvision naming -> PerceptualDistance's keys (net.*, lin*)."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    out = {k: v for k, v in state.items() if k.startswith(("net.slice", "lin"))}
    slice_of = {}
    start = 0
    for i, end in enumerate(SLICE_ENDS):
        for j in range(start, end):
            slice_of[j] = i + 1
        start = end
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) in slice_of:
            out[f"net.slice{slice_of[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
    return out


def load_perceptual_network(path: str | Path) -> PerceptualDistance:
    """PerceptualDistance with the VGG16 (and optional LPIPS linear) weights of the file at `path`.

    Raises ConfigError when no path is given and CheckpointError naming the file when it is missing,
    unreadable or holds no complete VGG16 feature stack."""
    from ..files.state_dicts import load_state_dict_file

    if not str(path):
        raise ConfigError("the perceptual loss needs model.perceptual_path (a VGG16 / LPIPS weights file); "
                          "set it or set model.perceptual_weight=0")
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"perceptual network file {str(path)!r} does not exist; model.perceptual_path must "
                              f"name a VGG16 / LPIPS weights file (torchvision, LPIPS or taming keys), or set "
                              f"model.perceptual_weight=0")
    state = lpips_state_dict(load_state_dict_file(path))
    network = PerceptualDistance()
    own = network.state_dict()
    vgg = [k for k in own if k.startswith("net.")]
    missing = [k for k in vgg if k not in state]
    if missing:
        raise CheckpointError(f"{str(path)!r} holds no complete VGG16 feature stack: missing {missing[:3]} "
                              f"({len(missing)} of {len(vgg)} tensors); expected torchvision 'features.N.*', "
                              f"LPIPS 'net.sliceK.N.*' or taming 'loss.perceptual_loss.net.*' keys")
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{str(path)!r}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                              f"VGG16/LPIPS needs {tuple(own[wrong[0]].shape)}")
    network.load_state_dict({k: state.get(k, v) for k, v in own.items()})
    return network
