"""MaskGIT-style training steps fed from a token cache vs tokenizing every batch on the fly.

Both paths train mimkit's MaskGIT (preset maskgit_fmnist's model, or --sizes) with a fused AdamW
step; they differ only in where the codes come from, exactly as `mimkit train` would feed them:

  cache:      ResumableLoader over TokenCacheDataset (identity + hflip views, one drawn per item),
              model(tokens=...)
  on the fly: ResumableLoader over the 32 px Fashion-MNIST images, the data config's batched
              augmentation (RandomResizedCrop + flip), model(images=...) which encodes them with
              the frozen tokenizer inside the step

The tokenizer is the mimkit VQGAN built from preset `vqgan_fmnist` with random weights when
mimkit.tokenizers.vqgan has it (random weights cost the same as trained ones); otherwise, or with
--stand-in, a heavier taming-style conv encoder (base 64 channels, f = 4, 512 codes); the output
says which.

The speed-up is 1 + (encode time per batch) / (transformer step time), so it shrinks as the
transformer grows; `--sizes` picks the transformers (DEPTHxDIM,...).
The two paths are timed in alternating rounds (so load from other processes hits both alike) and
the median step time of each is reported, with the ratio and the one-off cost of building the cache.

    python benchmarks/token_cache.py            # ~2-3 minutes on 2 cores
    python benchmarks/token_cache.py --quick    # < 1 minute
    python benchmarks/token_cache.py --quick --stand-in --sizes 2x64,4x128
"""
import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from mimkit.data import ResumableLoader, build_dataset
from mimkit.data.config import DataConfig
from mimkit.engine.optim import build_adamw
from mimkit.tokenizers.cache import TokenCacheDataset, build_token_cache, tokenizer_input


@dataclass
class Transformer:
    """A stage-2 transformer size."""

    name: str
    dim: int
    depth: int
    num_heads: int


@dataclass
class BenchConfig:
    """The transformers, the batch and the timing (the tokenizer comes from `build_tokenizer`)."""

    transformers: tuple = (Transformer("tiny", 128, 2, 4), Transformer("maskgit_fmnist", 192, 4, 6))
    batch: int = 64
    images: int = 1024       # images tokenized into the cache (both loaders cycle over them)
    warmup: int = 2
    rounds: int = 4
    per_round: int = 3


QUICK = BenchConfig(images=256, warmup=1, rounds=2, per_round=2)


# ------------------------------------------------------------------ tokenizer
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(32, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class StandInTokenizer(nn.Module):
    """A taming-transformers-style VQGAN encoder + nearest-code lookup, random weights:
    conv_in; per level 2 res blocks (channels 64 * (1, 2, 2)), stride-2 conv between levels;
    mid res-attn-res; GroupNorm, swish, conv to 64-d; 1x1 quant_conv; l2 lookup in 512 codes.
    32 px grey -> 8 x 8 codes."""

    def __init__(self, ch: int = 64, mult=(1, 2, 2), z_dim: int = 64, codebook_size: int = 512, img_size: int = 32):
        super().__init__()
        self.config = SimpleNamespace(img_size=img_size, in_chans=1)
        layers, cin = [nn.Conv2d(1, ch, 3, padding=1)], ch
        for i, m in enumerate(mult):
            for _ in range(2):
                layers.append(ResBlock(cin, ch * m))
                cin = ch * m
            if i < len(mult) - 1:
                layers.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1))
        self.down = nn.Sequential(*layers)
        self.mid1, self.mid2 = ResBlock(cin, cin), ResBlock(cin, cin)
        self.attn_norm, self.attn = nn.GroupNorm(32, cin, eps=1e-6), nn.MultiheadAttention(cin, 1, batch_first=True)
        self.out = nn.Sequential(nn.GroupNorm(32, cin, eps=1e-6), nn.SiLU(), nn.Conv2d(cin, z_dim, 3, padding=1),
                                 nn.Conv2d(z_dim, z_dim, 1))
        self.codebook = nn.Parameter(torch.randn(codebook_size, z_dim))
        self.codebook_size, self.grid_size = codebook_size, (img_size // 4, img_size // 4)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = self.mid1(self.down(images * 2 - 1))
        n, c, h, w = x.shape
        seq = self.attn_norm(x).flatten(2).transpose(1, 2)
        x = x + self.attn(seq, seq, seq, need_weights=False)[0].transpose(1, 2).view(n, c, h, w)
        z = self.out(self.mid2(x)).permute(0, 2, 3, 1).reshape(-1, self.codebook.shape[1])
        dist = (z * z).sum(1, keepdim=True) - 2 * z @ self.codebook.T + (self.codebook ** 2).sum(1)
        return dist.argmin(1).view(n, h, w)


def build_tokenizer(stand_in: bool = False) -> tuple[nn.Module, str]:
    """The VQGAN of preset vqgan_fmnist (random weights) if mimkit has it, else (or when asked) the stand-in."""
    if stand_in:
        return StandInTokenizer().eval(), "STAND-IN taming-style encoder (ch 64 x (1,2,2), f=4, 512 codes; --stand-in)"
    try:
        from mimkit.config import load_config
        from mimkit.registry import build_model
        from mimkit.tokenizers import vqgan  # noqa: F401

        config = load_config("vqgan_fmnist", [])
        model = build_model(config.method, config.model)
        return model.eval(), "mimkit VQGAN, preset vqgan_fmnist model config, random weights"
    except Exception as err:  # no VQGAN (yet) or no such preset
        why = f"{type(err).__name__}: {err}".splitlines()[0][:80]
        return StandInTokenizer().eval(), f"STAND-IN taming-style conv encoder (ch 64 x (1,2,2), f=4, 512 codes; {why})"


# ------------------------------------------------------------------ MaskGIT step
def make_step(model, optimizer, next_batch):
    def step():
        loss = model(**next_batch()).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


# ------------------------------------------------------------------ timing
def time_interleaved(steps: dict, c: BenchConfig) -> dict:
    """Median seconds per step of each closure, in alternating rounds of `per_round` steps."""
    for step in steps.values():
        for _ in range(c.warmup):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(c.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            for _ in range(c.per_round):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def build_maskgit(t: Transformer, tokenizer):
    """A MaskGIT of size t around `tokenizer` (swapped in for the stand-in, which is no mimkit method)."""
    from mimkit.config import load_config
    from mimkit.methods.maskgit import MaskGIT, MaskGITConfig

    vq = load_config("vqgan_fmnist", []).model
    spec = {"method": "vqgan", "model": {**vq.__dict__, "channel_mult": list(vq.channel_mult),
                                         "attn_resolutions": list(vq.attn_resolutions)}}
    torch.manual_seed(1)
    model = MaskGIT(MaskGITConfig(tokenizer_config=spec, num_classes=10, embed_dim=t.dim, depth=t.depth,
                                  num_heads=t.num_heads, dropout=0.0))
    if not isinstance(tokenizer, type(model.tokenizer)):
        model.tokenizer = tokenizer.requires_grad_(False)
    else:
        model.tokenizer.load_state_dict(tokenizer.state_dict())
    return model.train()


def bench_transformer(t: Transformer, c: BenchConfig, tokenizer, tokens, images) -> dict:
    """Median s/step fed from the cache and on the fly."""
    from mimkit.data import build_augment

    augment = build_augment(DataConfig(image_size=tokenizer.config.img_size))

    def model_and_optimizer():
        model = build_maskgit(t, tokenizer)
        return model, build_adamw(model, lr=1e-4, weight_decay=0.045, betas=(0.9, 0.96))

    cached_loader = ResumableLoader(tokens, c.batch, seed=0)
    image_loader = ResumableLoader(images, c.batch, seed=0)

    def from_cache():
        batch = next(cached_loader)
        return {"tokens": batch["tokens"], "labels": batch["labels"]}

    def on_the_fly():
        batch = next(image_loader)
        return {"images": augment(batch["images"]), "labels": batch["labels"]}

    model, optimizer = model_and_optimizer()
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("tokenizer."))
    steps = {"cache": make_step(model, optimizer, from_cache),
             "on the fly": make_step(*model_and_optimizer(), on_the_fly)}
    sec = time_interleaved(steps, c)
    encode = []
    for _ in range(c.rounds):
        start = time.perf_counter()
        model.batch_tokens(None, on_the_fly()["images"])
        encode.append(time.perf_counter() - start)
    return {"transformer": t, "params": params, "sec": sec, "encode": statistics.median(encode),
            "ratio": sec["on the fly"] / sec["cache"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and timed steps (< 1 minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--images", type=int, default=None, help="images in the cache")
    parser.add_argument("--stand-in", action="store_true",
                        help="use the heavier taming-style stand-in encoder (base 64 channels, 2 res blocks, mid "
                             "attention) instead of the vqgan_fmnist preset")
    parser.add_argument("--sizes", default=None,
                        help="transformers as DEPTHxDIM,... (heads = dim / 32), e.g. 2x64,4x128 (default 2x128,4x192 = maskgit_fmnist)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c = QUICK if args.quick else BenchConfig()
    c.batch, c.images = args.batch or c.batch, args.images or c.images
    if args.sizes:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
        c.transformers = tuple(Transformer("", w, d, max(1, w // 32)) for d, w in sizes)
    torch.manual_seed(0)

    tokenizer, tokenizer_name = build_tokenizer(args.stand_in)
    channels, size = tokenizer_input(tokenizer)
    images = build_dataset(DataConfig(name="fashion-mnist", image_size=size, augment=False, limit=c.images),
                           channels=channels)
    h, w = tokenizer.grid_size
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache_dir = build_token_cache(tokenizer, images, f"{tmp}/cache", batch_size=256, progress=False,
                                      source="fashion-mnist:train")
        build_seconds = time.perf_counter() - start
        tokens = TokenCacheDataset(cache_dir)
        results = [bench_transformer(t, c, tokenizer, tokens, images) for t in c.transformers]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {c.batch}; "
          f"{c.rounds} alternating rounds x {c.per_round} steps after {c.warmup} warm-up, median step")
    encoder = getattr(tokenizer, "encoder", tokenizer)
    print(f"tokenizer: {tokenizer_name}; encoder {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M params, "
          f"{size} px x {channels} ch -> {h}x{w} codes from {tokenizer.codebook_size}")
    print(f"transformer: mimkit MaskGIT over [class; {h * w} tokens], cosine masking, CE + label smoothing 0.1, "
          f"fused AdamW; on the fly = augment + encode inside model(images=...)")
    print(f"cache build: {c.images} images x 2 views (identity, hflip) in {build_seconds:.1f} s "
          f"({2 * c.images / build_seconds:.0f} encodes/s), paid once")
    header = (f"{'transformer':<24} | {'params':>7} | {'cache s/step':>12} | {'on-the-fly s/step':>17} | "
              f"{'(aug+encode)':>12} | {'steps/s ratio':>13}")
    print(header)
    print("-" * len(header))
    for r in results:
        t, sec = r["transformer"], r["sec"]
        name = f"{t.name + ' ' if t.name else ''}{t.depth} x {t.dim}-d, {t.num_heads} h"
        print(f"{name:<24} | {r['params'] / 1e6:>6.2f}M | {sec['cache']:>12.3f} | {sec['on the fly']:>17.3f} | "
              f"{r['encode']:>12.3f} | {r['ratio']:>12.2f}x")
    print("ratio = on-the-fly s/step / cache s/step = 1 + encode / transformer step; target >= 3x: "
          + ", ".join(f"{r['transformer'].name or r['transformer'].dim} {'met' if r['ratio'] >= 3 else 'NOT met'}"
                      for r in results))


if __name__ == "__main__":
    main()
