"""The shuffled order of an epoch, from its own generator (the global RNG is left untouched)."""
import torch


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: randperm from a Generator seeded with (seed, epoch)."""
    generator = torch.Generator()
    generator.manual_seed(((seed & 0xFFFFFFFF) << 32) | (epoch & 0xFFFFFFFF))
    return torch.randperm(size, generator=generator)
