"""Train-step throughput of mimkit's MAE against transformers' ViTMAEForPreTraining, fp32 on CPU.

Both models are built in this process with the same architecture and the same batch, and both step
with the same optimizer: `mimkit.engine.optim.build_adamw` (AdamW, betas (0.9, 0.95), fused when
available, no weight decay on biases, norms and the cls / mask tokens). The two parameter groups
hold the same number of elements in both models (printed); transformers' model has more tensors
only because q, k and v are separate there. Two things are timed per model: the full step
(forward + backward + optimizer step + zero_grad) and forward + backward alone (gradients dropped,
no optimizer), so the ratio of the models themselves is reported apart from the step's. Until
issue 16 the transformers model stepped with a default `torch.optim.AdamW` (per-tensor loop on
CPU, all parameters decayed), which put an optimizer advantage into the old ratio. The closures
are timed interleaved (alternating which goes first) so that load from other processes hits all
alike, and the median step time is reported.

MFU = model FLOPs per step / step time / measured fp32 matmul peak. Model FLOPs are counted
analytically (`model_flops`): every matmul of the forward pass (patch embedding of the kept
patches, qkv, q k^T, attn v, proj, fc1, fc2, decoder_embed, decoder_pred), times 3 for forward +
backward; the same count for both models (transformers also embeds the hidden patches, which the
count leaves out). Elementwise work (norms, GELU, softmax, loss, optimizer) is not counted.
`--check-flops` prints torch.utils.flop_counter.FlopCounterMode's count of one mimkit forward +
backward next to it; that counter sees no FLOPs in CPU flash attention and counts the patch
embedding's weight gradient only, so it comes out lower by those.
The peak is the GFLOP/s of large square fp32 matmuls with torch.get_num_threads() threads (the
faster of BLAS and oneDNN), measured before and after the models; the higher of the two is used.

    python benchmarks/mae_step.py                 # both configs, ~8 min on 2 idle cores
    python benchmarks/mae_step.py --quick --config a
    python benchmarks/mae_step.py --threads 1      # steadier on a machine shared with other jobs
"""
import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from mimkit.engine.optim import build_adamw
from mimkit.methods.mae import MAE, MAEConfig

LR, WEIGHT_DECAY = 1.5e-4, 0.05


@dataclass
class BenchConfig:
    """One benchmarked architecture (MAE names) and its batch size."""

    name: str
    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    batch: int
    in_chans: int = 3
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    min_ratio: float = 1.0    # targets, printed next to the measured numbers
    min_mfu: float | None = None


CONFIGS = {
    "a": BenchConfig("a: ViT-Tiny 32px/4, dec 128x4, bs 64", 32, 4, 192, 12, 3, 128, 4, 4, 64, min_ratio=1.3),
    "b": BenchConfig("b: ViT-B/16 224px, dec 512x8, bs 8", 224, 16, 768, 12, 12, 512, 8, 16, 8,
                     min_ratio=1.1, min_mfu=0.80),
}


# ------------------------------------------------------------------ models
def build_mimkit(c: BenchConfig, device: str | torch.device = "cpu"):
    """mimkit's MAE of config `c` on `device`, and its optimizer (mimkit.engine.optim.build_adamw)."""
    model = MAE(MAEConfig(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim,
                          depth=c.depth, num_heads=c.num_heads, decoder_embed_dim=c.decoder_embed_dim,
                          decoder_depth=c.decoder_depth, decoder_num_heads=c.decoder_num_heads,
                          mlp_ratio=c.mlp_ratio, mask_ratio=c.mask_ratio, norm_pix_loss=True)).to(device)
    return model, build_adamw(model, lr=LR, weight_decay=WEIGHT_DECAY)


def build_hf(c: BenchConfig, device: str | torch.device = "cpu"):
    """transformers' ViTMAEForPreTraining of config `c` (sdpa attention) on `device`, and the same
    optimizer as mimkit's."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(image_size=c.img_size, patch_size=c.patch_size, num_channels=c.in_chans,
                          hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                          intermediate_size=int(c.embed_dim * c.mlp_ratio), decoder_hidden_size=c.decoder_embed_dim,
                          decoder_num_hidden_layers=c.decoder_depth, decoder_num_attention_heads=c.decoder_num_heads,
                          decoder_intermediate_size=int(c.decoder_embed_dim * c.mlp_ratio), mask_ratio=c.mask_ratio,
                          norm_pix_loss=True, layer_norm_eps=1e-6, attn_implementation="sdpa")
    model = ViTMAEForPreTraining(config).to(device)
    return model, build_adamw(model, lr=LR, weight_decay=WEIGHT_DECAY)  # the same optimizer as mimkit's


def make_step(model, optimizer, images, hf: bool, update: bool = True):
    """A closure running one training step: forward + backward + optimizer step + zero_grad, or with
    update=False forward + backward alone (the gradients are then dropped, so none accumulate)."""
    model.train()

    def step():
        loss = model(pixel_values=images).loss if hf else model(images).loss
        loss.backward()
        if update:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def group_sizes(optimizer) -> list[tuple[float, int]]:
    """(weight decay, number of elements) of each parameter group, to show both models' agree."""
    return [(g["weight_decay"], sum(p.numel() for p in g["params"])) for g in optimizer.param_groups]


# ------------------------------------------------------------------- FLOPs
def model_flops(c: BenchConfig) -> float:
    """Analytic matmul FLOPs of one training step (forward x 3), for batch c.batch."""
    grid = c.img_size // c.patch_size
    length = grid * grid
    enc_len = 1 + int(length * (1 - c.mask_ratio))  # cls + kept patches
    dec_len = 1 + length
    patch_dim = c.patch_size**2 * c.in_chans

    def blocks(dim, depth, seq):
        hidden = int(dim * c.mlp_ratio)
        per_token = 2 * (3 * dim * dim + dim * dim + 2 * dim * hidden)  # qkv, proj, fc1, fc2
        per_token += 2 * 2 * seq * dim  # q k^T and attn v
        return depth * seq * per_token

    forward = (2 * (enc_len - 1) * patch_dim * c.embed_dim     # patch embedding of the kept patches
               + blocks(c.embed_dim, c.depth, enc_len)
               + 2 * enc_len * c.embed_dim * c.decoder_embed_dim   # decoder_embed
               + blocks(c.decoder_embed_dim, c.decoder_depth, dec_len)
               + 2 * dec_len * c.decoder_embed_dim * patch_dim)    # decoder_pred (cls row too)
    return 3.0 * forward * c.batch


def counted_flops(c: BenchConfig) -> float:
    """FlopCounterMode's count of one mimkit forward + backward (for --check-flops)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = build_mimkit(c)
    images = torch.rand(c.batch, c.in_chans, c.img_size, c.img_size)
    with FlopCounterMode(display=False) as counter:
        model(images).loss.backward()
    return counter.get_total_flops()


def matmul_peak(size: int = 2048, repeats: int = 7) -> float:
    """fp32 GFLOP/s of (size x size) @ (size x size) with the current thread count: the median
    over repeats of the faster of the two CPU backends, BLAS (torch.mm) and oneDNN (which
    mimkit.nn.linear uses), so that MFU is measured against the best this machine reaches."""
    from mimkit.nn.linear import onednn_available

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    backends = {"blas": lambda: torch.mm(a, b, out=out)}
    if onednn_available():
        backends["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    best = 0.0
    for run in backends.values():
        for _ in range(2):
            run()
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(3):
                run()
            rates.append(3 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
        best = max(best, statistics.median(rates))
    return best


# ------------------------------------------------------------------ timing
def time_interleaved(steps: dict, warmup: int, rounds: int, per_round: int) -> dict:
    """Median seconds per step of each closure, timed in alternating rounds of `per_round` steps."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            for _ in range(per_round):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(c: BenchConfig, quick: bool) -> dict:
    torch.manual_seed(0)
    images = torch.rand(c.batch, c.in_chans, c.img_size, c.img_size)
    (mim, mim_opt), (hf, hf_opt) = build_mimkit(c), build_hf(c)
    if group_sizes(mim_opt) != group_sizes(hf_opt):
        raise RuntimeError(f"parameter groups differ: mimkit {group_sizes(mim_opt)}, HF {group_sizes(hf_opt)}")
    print(f"{c.name.split(':')[0]}: both optimizers {type(mim_opt).__name__} "
          f"fused={mim_opt.defaults.get('fused')}/{hf_opt.defaults.get('fused')}, "
          f"groups (weight decay, elements) {group_sizes(mim_opt)}", flush=True)
    steps = {"mimkit": make_step(mim, mim_opt, images, hf=False),
             "hf": make_step(hf, hf_opt, images, hf=True),
             "mimkit_fb": make_step(mim, mim_opt, images, hf=False, update=False),
             "hf_fb": make_step(hf, hf_opt, images, hf=True, update=False)}
    big = c.embed_dim >= 512
    warmup = 2 if big else 5
    rounds = (2 if quick else 4) if big else (3 if quick else 6)
    per_round = (2 if quick else 3) if big else (5 if quick else 10)
    sec = time_interleaved(steps, warmup, rounds, per_round)
    flops = model_flops(c)
    return {"config": c, "sec": sec, "flops": flops,
            "img_s": {k: c.batch / s for k, s in sec.items()}}


def load_average() -> str:
    """The 1/5/15-minute load averages (Linux), to tell a quiet machine from a busy one."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["a", "b", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--check-flops", action="store_true",
                        help="also count FLOPs with FlopCounterMode and compare with the analytic count")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for everything, peak included (default: as set)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keys = ["a", "b"] if args.config == "all" else [args.config]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_average()}")
    peak_before = matmul_peak()
    results = [bench(CONFIGS[k], args.quick) for k in keys]
    peak = max(peak_before, matmul_peak())  # again after, against drifting load
    for r in results:
        r["mfu"] = {k: r["flops"] / s / (peak * 1e9) for k, s in r["sec"].items()}

    print(f"load average at the end {load_average()} (other processes on the machine slow both models)")
    header = (f"{'config':<40} | {'timed':<13} | {'mimkit img/s':>12} | {'HF img/s':>9} | {'ratio':>6} | "
              f"{'mimkit MFU':>10} | {'HF MFU':>7} | {'peak GFLOP/s':>12}")
    print(header)
    print("-" * len(header))
    for r in results:
        c, img, mfu = r["config"], r["img_s"], r["mfu"]
        for what, suffix in (("full step", ""), ("forward+back", "_fb")):
            m, h = "mimkit" + suffix, "hf" + suffix
            print(f"{c.name:<40} | {what:<13} | {img[m]:>12.1f} | {img[h]:>9.1f} | {img[m] / img[h]:>6.2f} | "
                  f"{mfu[m]:>10.1%} | {mfu[h]:>7.1%} | {peak:>12.0f}")
    print()
    for r in results:
        c, img, mfu = r["config"], r["img_s"], r["mfu"]
        ratio = img["mimkit"] / img["hf"]
        line = (f"{c.name.split(':')[0]}: {r['flops'] / 1e9:.1f} GFLOP/step (analytic, 3x forward matmuls); "
                f"full-step ratio {ratio:.2f} (target >= {c.min_ratio}: {'ok' if ratio >= c.min_ratio else 'MISSED'}), "
                f"forward+backward ratio {img['mimkit_fb'] / img['hf_fb']:.2f}")
        if c.min_mfu is not None:
            line += f"; mimkit MFU {mfu['mimkit']:.1%} (target >= {c.min_mfu:.0%}: " \
                    f"{'ok' if mfu['mimkit'] >= c.min_mfu else 'MISSED'})"
        print(line)
    if args.check_flops:
        for k in keys:
            c = CONFIGS[k]
            counted = counted_flops(c)
            print(f"{k}: FlopCounterMode {counted / 1e9:.1f} GFLOP vs analytic {model_flops(c) / 1e9:.1f} GFLOP")


if __name__ == "__main__":
    main()
