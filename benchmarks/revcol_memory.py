"""Activation memory of reversible columns vs plain autograd, by number of columns.

For a ColumnStack of 2, 4 and 8 columns (4 levels of one ViT block each), one forward in training
mode under torch.autograd.graph.saved_tensors_hooks records every tensor autograd keeps for
backward; the bytes of their unique storages (parameters excluded) are the activation memory.
The reversible path also keeps one CPU RNG state per level and column on its context (not a saved
tensor); that is counted in its own column. With --rss each case also runs forward + backward in a
fresh subprocess and reports the growth of its peak resident set size (VmHWM, reset just before) over
the RSS before the forward (Linux only).

    python benchmarks/revcol_memory.py                      # batch 32, 50 tokens, 128-d (revcolv2_fmnist's decoder)
    python benchmarks/revcol_memory.py --rss --tokens 197   # + peak RSS, ViT-B/16-like length

Target: the reversible path grows <= 1.3x from 2 to 8 columns; the plain path about linearly (4x).
"""
import argparse
import json
import subprocess
import sys
import time

import torch

from mimkit.nn.reversible import ColumnStack

COLUMNS = (2, 4, 8)


def build(columns: int, args, reversible: bool) -> ColumnStack:
    torch.manual_seed(0)
    return ColumnStack(columns, args.levels, args.dim, args.heads, dropout=0.1, drop_path=0.1,
                       reversible=reversible).train()


def saved_activation_bytes(stack: ColumnStack, x: torch.Tensor) -> tuple[int, int]:
    """(bytes of the unique non-parameter storages saved for backward, number of saved tensors)."""
    params = {p.untyped_storage().data_ptr() for p in stack.parameters()}
    storages, count = {}, 0

    def pack(t):
        nonlocal count
        count += 1
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = stack(x)
    del out
    return sum(storages.values()), count


def rng_state_bytes(stack: ColumnStack) -> int:
    """What the reversible context keeps besides saved tensors: one CPU RNG state per F call."""
    return len(stack.columns) * stack.n_levels * torch.get_rng_state().nbytes


def step_seconds(stack: ColumnStack, x: torch.Tensor, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sum(o.sum() for o in stack(x)).backward()
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_growth(columns: int, args, reversible: bool) -> float:
    """MiB of peak-RSS growth of one forward + backward, measured in a fresh process."""
    code = (f"import sys, json; sys.argv = {sys.argv[:1] + ['--child', str(columns), str(int(reversible))] + rest_argv(args)!r}\n"
            f"exec(open({__file__!r}).read())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def rest_argv(args) -> list[str]:
    return ["--batch", str(args.batch), "--tokens", str(args.tokens), "--dim", str(args.dim), "--heads",
            str(args.heads), "--levels", str(args.levels), "--threads", str(args.threads)]


def child(columns: int, reversible: bool, args) -> None:
    stack = build(columns, args, reversible)
    x = torch.randn(args.batch, args.tokens, args.dim, requires_grad=True)
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to the current RSS
        handle.write("5")
    before = proc_status_kib("VmRSS")
    sum(o.sum() for o in stack(x)).backward()
    print(json.dumps({"mib": (proc_status_kib("VmHWM") - before) / 1024}))


def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rss", action="store_true", help="also measure peak RSS growth in subprocesses")
    p.add_argument("--time", action="store_true", help="also time forward + backward (best of 3)")
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child[0], bool(args.child[1]), args)

    x = torch.randn(args.batch, args.tokens, args.dim)
    print(f"ColumnStack: {args.levels} levels x 1 block, {args.dim}-d, batch {args.batch} x {args.tokens} tokens, "
          f"dropout + drop path on, torch {torch.__version__}")
    header = "path       | columns | saved tensors | saved activations MiB | + RNG states MiB"
    header += " | peak RSS growth MiB" if args.rss else ""
    header += " | fwd+bwd s" if args.time else ""
    print(header)
    totals = {}
    for reversible in (False, True):
        for columns in COLUMNS:
            stack = build(columns, args, reversible)
            nbytes, count = saved_activation_bytes(stack, x)
            extra = rng_state_bytes(stack) if reversible else 0
            totals[reversible, columns] = nbytes + extra
            row = (f"{'reversible' if reversible else 'plain':10s} | {columns:7d} | {count:13d} | "
                   f"{nbytes / 2**20:21.2f} | {(nbytes + extra) / 2**20:16.2f}")
            if args.rss:
                row += f" | {peak_rss_growth(columns, args, reversible):19.1f}"
            if args.time:
                row += f" | {step_seconds(stack, x.clone().requires_grad_()):9.3f}"
            print(row)
    for reversible in (False, True):
        ratio = totals[reversible, 8] / totals[reversible, 2]
        target = "target <= 1.3x: " + ("met" if ratio <= 1.3 else "MISSED") if reversible else "expected ~4x (linear)"
        print(f"growth 8 / 2 columns, {'reversible' if reversible else 'plain'}: {ratio:.2f}x ({target})")
    print(f"reversible / plain at 8 columns: {totals[True, 8] / totals[False, 8]:.3f}")


if __name__ == "__main__":
    main()
