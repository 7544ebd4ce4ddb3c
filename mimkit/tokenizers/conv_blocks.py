"""The convolutional encoder and decoder of a VQGAN: residual blocks, single-head spatial
attention, strided downsampling and nearest-neighbour upsampling, GroupNorm + swish.

Attribute names follow taming-transformers (`conv_in`, `down.N.block.M.norm1`, `down.N.downsample.conv`,
`mid.block_1`, `mid.attn_1.{q,k,v,proj_out}`, `up.N.upsample.conv`, `norm_out`, `conv_out`), so
its checkpoints map onto these modules key for key. Level i works at channels
base_channels * channel_mult[i]; every level but the last halves (encoder) / doubles (decoder) the
resolution, so the downsampling factor is f = 2 ** (len(channel_mult) - 1).

The MaskGIT VQGAN (maskgit_vqgan.py) builds its own Encoder / Decoder from the same ResnetBlock,
Level, Mid, Downsample and Upsample with their options: bias-free convs, the shortcut on the
block's output, no attention, average-pool downsampling. The defaults are taming's.
"""
import torch
import torch.nn.functional as F
from torch import nn


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with `groups` groups (fewer when `channels` is not a multiple), eps 1e-6 as in taming."""
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(swish(norm(conv(swish(norm(x)))))), a 1x1 `nin_shortcut` when channels change.

    bias: whether the convolutions have a bias (MaskGIT's have none). shortcut: where the 1x1
    `nin_shortcut` is applied when channels change: "input" (taming: nin_shortcut(x) + h, in -> out
    channels) or "branch" (MaskGIT's tokenizer, kept by MAGE's port: nin_shortcut(h) + h, out -> out,
    so the block's input is not added back at all)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = 32,
                 bias: bool = True, shortcut: str = "input"):
        super().__init__()
        if shortcut not in ("input", "branch"):
            raise ValueError(f"shortcut must be 'input' or 'branch', got {shortcut!r}")
        self.shortcut = shortcut
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        short_in = in_channels if shortcut == "input" else out_channels
        self.nin_shortcut = nn.Conv2d(short_in, out_channels, 1, bias=bias) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.nin_shortcut is None:
            return x + h
        return self.nin_shortcut(x if self.shortcut == "input" else h) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions of a feature map (1x1 conv q, k, v, proj_out)."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).reshape(n, 1, c, h * w).transpose(-1, -2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale c ** -0.5
        return x + self.proj_out(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Halve the resolution. conv=True: pad one pixel right/bottom, 3x3 conv with stride 2 (taming's
    choice); conv=False: 2x2 average pooling, no parameters (MaskGIT's `conv_downsample=False`)."""

    def __init__(self, channels: int, conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0) if conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder/decoder: num_blocks residual blocks (in_channels -> out_channels,
    then out_channels), attention after each block when `attn` (an attention resolution), and a
    resampler `downsample` / `upsample` that the Encoder / Decoder sets on all levels but its last.
    block_options: ResnetBlock's bias / shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attn: bool, dropout: float,
                 groups: int, **block_options):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for i in range(num_blocks):  # block, attention, block, ...: the order of taming's random init
            self.block.append(ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout, groups,
                                          **block_options))
            if attn:
                self.attn.append(AttnBlock(out_channels, groups))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                h = getattr(self, name)(h)
        return h


class Mid(nn.Module):
    """block_1 -> attn_1 -> block_2 at the lowest resolution (taming). attn=False drops attn_1 and
    num_blocks sets how many blocks (block_1 .. block_n) run in a row (MaskGIT: num_res_blocks);
    block_options: ResnetBlock's bias / shortcut."""

    def __init__(self, channels: int, dropout: float, groups: int, attn: bool = True, num_blocks: int = 2,
                 **block_options):
        super().__init__()
        if attn and num_blocks != 2:
            raise ValueError(f"the attention middle has exactly 2 blocks, got num_blocks={num_blocks}")
        self.num_blocks = num_blocks
        for i in range(1, num_blocks + 1):  # creation order block_1, attn_1, block_2: taming's init order
            setattr(self, f"block_{i}", ResnetBlock(channels, channels, dropout, groups, **block_options))
            if attn and i == 1:
                self.attn_1 = AttnBlock(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block_{i}")(x)
            if i == 1 and hasattr(self, "attn_1"):
                x = self.attn_1(x)
        return x


class Encoder(nn.Module):
    """images (N, in_channels, H, W) in [-1, 1] -> features (N, z_channels, H / f, W / f)."""

    def __init__(self, in_channels: int, base_channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 attn_resolutions: tuple[int, ...], resolution: int, z_channels: int, dropout: float = 0.0,
                 groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        channels, res = base_channels, resolution
        for i, mult in enumerate(channel_mult):
            level = Level(channels, base_channels * mult, num_res_blocks, res in attn_resolutions, dropout, groups)
            channels = base_channels * mult
            if i != len(channel_mult) - 1:
                level.downsample = Downsample(channels)
                res //= 2
            self.down.append(level)
        self.mid = Mid(channels, dropout, groups)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """features (N, z_channels, h, w) -> images (N, out_channels, h * f, w * f) in about [-1, 1].

    `up[i]` is level i (stored in encoder order, run from the last level down to 0), with
    num_res_blocks + 1 residual blocks each, as in taming."""

    def __init__(self, out_channels: int, base_channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 attn_resolutions: tuple[int, ...], resolution: int, z_channels: int, dropout: float = 0.0,
                 groups: int = 32):
        super().__init__()
        channels = base_channels * channel_mult[-1]
        res = resolution // 2 ** (len(channel_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = Mid(channels, dropout, groups)
        levels = []
        for i in reversed(range(len(channel_mult))):
            level = Level(channels, base_channels * channel_mult[i], num_res_blocks + 1, res in attn_resolutions,
                          dropout, groups)
            channels = base_channels * channel_mult[i]
            if i != 0:
                level.upsample = Upsample(channels)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))
