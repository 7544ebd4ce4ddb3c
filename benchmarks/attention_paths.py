"""SDPA vs plain (written-out) attention on this machine, the measurement behind
`mimkit.nn.attention.CPU_MATH_MAX_LEN` (the auto path's switch to plain attention below a length).

Times F.scaled_dot_product_attention and `plain_attention` on (N, H, L, d) inputs, forward only and
forward + backward, interleaved (alternating which goes first) with the median over repeats. The
shapes are the attention calls of the MAE configs in benchmarks/mae_step.py plus a sweep of
sequence lengths. The last column says which path the auto setting takes at that length and
whether that is the faster one for forward + backward.

    python benchmarks/attention_paths.py           # ~1 minute on 2 cores
    python benchmarks/attention_paths.py --quick --threads 1
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mimkit.nn import attention
from mimkit.nn.attention import plain_attention

# (label, N, H, L, d)
SHAPES = [
    ("a enc  ViT-Tiny 32/4, 25% kept", 64, 3, 17, 64),
    ("a dec  128-d, 4 heads", 64, 4, 65, 32),
    ("b enc  ViT-B/16 224, 25% kept", 8, 12, 50, 64),
    ("b dec  512-d, 16 heads", 8, 16, 197, 32),
    ("sweep", 64, 3, 33, 64),
    ("sweep", 64, 3, 49, 64),
    ("sweep", 64, 3, 129, 64),
    ("sweep", 64, 4, 257, 32),
]


def median_ms(fns: dict, repeats: int, inner: int) -> dict:
    """Median milliseconds per call of each closure, over `repeats` interleaved rounds."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            times[name].append((time.perf_counter() - start) / inner * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_shape(n: int, h: int, length: int, d: int, repeats: int) -> dict:
    # q, k, v as the views Attention makes of its fused (N, L, 3, H, d) projection
    qkv = torch.randn(n, length, 3, h, d, requires_grad=True)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    grad = torch.randn(n, h, length, d).transpose(1, 2).contiguous().transpose(1, 2)
    paths = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v), "plain": lambda: plain_attention(q, k, v)}

    def forward(path):
        def fn():
            with torch.no_grad():
                path()
        return fn

    def forward_backward(path):
        def fn():
            torch.autograd.grad(path(), qkv, grad)
        return fn

    inner = max(1, int(2e6 // (n * h * length * max(length, d))))
    fwd = median_ms({name: forward(p) for name, p in paths.items()}, repeats, inner)
    both = median_ms({name: forward_backward(p) for name, p in paths.items()}, repeats, inner)
    return {"fwd": fwd, "both": both}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: as set); 1 is steadier on a machine shared with other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 15
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU_MATH_MAX_LEN = {attention.CPU_MATH_MAX_LEN}")
    header = (f"{'shape':<32} | {'N':>3} {'H':>3} {'L':>4} {'d':>3} | {'fwd sdpa':>8} | {'fwd plain':>9} | "
              f"{'f+b sdpa':>8} | {'f+b plain':>9} | {'f+b faster':>10} | auto")
    print(header)
    print("-" * len(header))
    for label, n, h, length, d in SHAPES:
        r = bench_shape(n, h, length, d, repeats)
        fwd, both = r["fwd"], r["both"]
        faster = min(both, key=both.get)
        auto = "plain" if length < attention.CPU_MATH_MAX_LEN else "sdpa"
        print(f"{label:<32} | {n:>3} {h:>3} {length:>4} {d:>3} | {fwd['sdpa']:>8.3f} | {fwd['plain']:>9.3f} | "
              f"{both['sdpa']:>8.3f} | {both['plain']:>9.3f} | {faster:>10} | {auto}"
              f"{'' if auto == faster else ' (slower)'}")
    print("times in ms per call (median); f+b = forward + backward to the fused qkv tensor")


if __name__ == "__main__":
    main()
