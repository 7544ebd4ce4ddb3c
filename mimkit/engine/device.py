"""Device choice and mixed precision."""
import contextlib

import torch

from ..errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when present, else CPU; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=auto or cpu")
    return device


def autocast(device: torch.device, precision: str):
    """bf16 autocast context for precision="bf16", a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
