"""Where a model lives."""
import itertools

import torch
from torch import nn


def model_device(model) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither, or for
    an object that is no nn.Module."""
    if isinstance(model, nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return torch.device("cpu")
