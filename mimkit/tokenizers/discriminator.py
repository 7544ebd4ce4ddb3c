"""PatchGAN discriminator (pix2pix's N-layer discriminator, as taming-transformers uses it).

images (N, C, H, W) in [-1, 1] -> logits (N, 1, h', w'): one real/fake score per overlapping
patch. `main` is one Sequential, so taming's keys (`main.0.weight`, `main.2.weight`,
`main.3.running_mean`, ..., `main.11.bias`) load unchanged: conv 4x4/2 + LeakyReLU(0.2), then
(n_layers - 1) x [conv 4x4/2 (no bias) + BatchNorm + LeakyReLU] with channels doubling up to 8x,
one more such group with stride 1, and a 4x4/1 conv to one channel.
"""
import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)
