"""What every method's forward returns."""
from dataclasses import dataclass, field

import torch


@dataclass
class Output:
    """loss: scalar to minimise; logs: floats/0-d tensors the Trainer averages and writes."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
