"""Activation memory of reversible columns vs plain autograd, by number of columns.

For a ColumnStack of 2, 4 and 8 columns (4 levels of one ViT block each), one forward in training
mode records every tensor autograd keeps for backward; the bytes of their unique storages
(parameters excluded) are the activation memory. The reversible path also keeps one CPU RNG state
per level and column on its context (not a saved tensor); that is counted in its own column. With
--rss each case also runs forward + backward in a fresh subprocess and reports the growth of its
peak resident set size over the RSS before the forward (Linux only). The measuring code lives in
mimkit.repro.reversible_memory (shared with `mimkit repro revcol-memory`).

    python benchmarks/revcol_memory.py                      # batch 32, 50 tokens, 128-d (revcolv2_fmnist's decoder)
    python benchmarks/revcol_memory.py --rss --tokens 197   # + peak RSS, ViT-B/16-like length

Target: the reversible path grows <= 1.3x from 2 to 8 columns; the plain path about linearly (4x).
"""
import argparse
from dataclasses import replace

import torch

from mimkit.repro.reversible_memory import (StackSize, build_stack, peak_rss_growth, rng_state_bytes,
                                            saved_activations, stack_input, step_seconds)

COLUMNS = (2, 4, 8)


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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = StackSize(levels=args.levels, dim=args.dim, heads=args.heads, batch=args.batch, tokens=args.tokens)
    x = stack_input(base)
    print(f"ColumnStack: {args.levels} levels x 1 block, {args.dim}-d, batch {args.batch} x {args.tokens} tokens, "
          f"dropout + drop path on, torch {torch.__version__}")
    header = "path       | columns | saved tensors | saved activations MiB | + RNG states MiB"
    header += " | peak RSS growth MiB" if args.rss else ""
    header += " | fwd+bwd s" if args.time else ""
    print(header)
    totals = {}
    for reversible in (False, True):
        for columns in COLUMNS:
            size = replace(base, columns=columns)
            stack = build_stack(size, reversible)
            saved = saved_activations(lambda: stack(x), exclude=stack.parameters())
            totals[reversible, columns] = saved.nbytes + rng_state_bytes(stack)
            row = (f"{'reversible' if reversible else 'plain':10s} | {columns:7d} | {saved.tensors:13d} | "
                   f"{saved.mib:21.2f} | {totals[reversible, columns] / 2**20:16.2f}")
            if args.rss:
                row += f" | {peak_rss_growth(size, reversible, args.threads):19.1f}"
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
