"""Patch embedding: cut images into p x p patches and project each one linearly."""
import torch
from torch import nn

from .linear import linear


def to_pair(x) -> tuple[int, int]:
    """An int or a pair -> a pair of ints."""
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def patchify(images: torch.Tensor, patch_size) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, ph*pw*C), each patch flattened in (row, col, channel) order (MAE's)."""
    ph, pw = to_pair(patch_size)
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: torch.Tensor, patch_size, grid_size, channels: int) -> torch.Tensor:
    """(N, L, ph*pw*C) -> (N, C, gh*ph, gw*pw); the inverse of `patchify`."""
    ph, pw = to_pair(patch_size)
    gh, gw = to_pair(grid_size)
    n = patches.shape[0]
    x = patches.reshape(n, gh, gw, ph, pw, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, channels, gh * ph, gw * pw)


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, L, D) with L = (H/ph) * (W/pw); any channel count, non-square sizes.

    The weight keeps the Conv2d layout `proj.weight (D, C, ph, pw)` of ViT checkpoints, but the
    projection runs as one matmul over unfolded patches, which is faster than a strided
    convolution on CPU and identical in value. `patches` and `embed` are the two halves of
    `forward`, so that a masked model can embed only the patches it keeps.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.img_size = to_pair(img_size)
        self.patch_size = to_pair(patch_size)
        for side, p in zip(self.img_size, self.patch_size):
            if side % p:
                raise ValueError(f"image size {self.img_size} is not divisible by patch size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, C*ph*pw), each patch flattened in the conv weight's (C, ph, pw) order."""
        n, c, h, w = images.shape
        if (h, w) != self.img_size or c != self.in_chans:
            raise ValueError(f"expected images of shape (N, {self.in_chans}, {self.img_size[0]}, "
                             f"{self.img_size[1]}), got {tuple(images.shape)}")
        ph, pw = self.patch_size
        x = images.reshape(n, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)  # (N, gh, gw, C, ph, pw)
        return x.reshape(n, self.num_patches, c * ph * pw)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, K, C*ph*pw) patches from `patches` (any subset, any order) -> (N, K, D)."""
        return linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.patches(images))
