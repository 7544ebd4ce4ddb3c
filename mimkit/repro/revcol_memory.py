"""RevCol / RevColV2: with reversible columns the activation memory of a training step does not grow
with the number of columns, a plain network's grows linearly, and the reversible backward gives the
gradients of plain autograd.

No training: for ColumnStacks of 2..16 columns (4 levels of one 128-d ViT block, dropout and drop
path on, batch 32 x 50 tokens = the decoder of revcolv2_fmnist) one forward records what autograd
saves for backward (mimkit.repro.reversible_memory), plain vs reversible; a fresh process measures the
peak RSS of forward + backward (full mode); the same stacks are timed; and the gradients of every
parameter and of the input are compared, reversible vs plain, in float64 (the algorithm) and float32
(rounding of the inversion through the columns, with and without anchors). Then the whole RevColV2
MAE of revcolv2_fmnist with 1..8 encoder + as many decoder columns.
"""
import time
from dataclasses import asdict, replace

import torch

from ..config import load_config
from ..registry import build_model
from .reversible_memory import (StackSize, build_stack, parameter_bytes, peak_rss_growth, rng_state_bytes,
                               saved_activations, stack_input, step_seconds)
from .context import ReproContext, require
from .report import Report

FULL = {"columns": (2, 4, 8, 16), "stack": StackSize(levels=4, dim=128, heads=4, batch=32, tokens=50),
        "grad_batch": 8, "anchor_every": 4, "rss": True, "time_repeats": 2,
        "model_columns": (1, 2, 4, 8), "model_batch": 32, "model_overrides": ()}
QUICK = {"columns": (2, 4, 8), "stack": StackSize(levels=4, dim=32, heads=2, batch=16, tokens=50),
         "grad_batch": 4, "anchor_every": 4, "rss": False, "time_repeats": 1,
         "model_columns": (1, 2, 4), "model_batch": 8, "model_overrides": ("model.embed_dim=32", "model.num_heads=2")}
BASE_COLUMNS = 2  # growth is measured against the 2-column stack
MAX_REVERSIBLE_GROWTH = 1.3  # "does not grow": at most +30% from 2 columns to any larger count
MIN_LINEAR_FRACTION = 0.75  # "grows linearly": at least 75% of proportional growth (8 / 2 -> >= 3x)
GRAD_TOLERANCE = 1e-6  # max relative gradient difference in float64


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||a|| (0 when both are exactly zero; inf when only a is)."""
    diff, norm = float((a - b).norm()), float(a.norm())
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / norm


def gradients(stack, x: torch.Tensor, weights: list[torch.Tensor], reversible: bool) -> tuple[list, dict]:
    """Outputs and gradients of sum_l (w_l * c_l) w.r.t. x and every parameter, with the same
    dropout / drop-path draws for both paths (seed 7 before the forward)."""
    stack.reversible = reversible
    stack.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(7)
    out = stack(x)
    sum((o * w).sum() for o, w in zip(out, weights)).backward()
    grads = {"input": x.grad, **{name: p.grad for name, p in stack.named_parameters()}}
    return [o.detach() for o in out], grads


def gradient_check(size: StackSize, dtype: torch.dtype) -> dict:
    """Reversible vs plain on one stack: max over tensors of the relative gradient difference,
    the tensor where it is largest, and whether the outputs are bitwise equal."""
    stack = build_stack(size, reversible=False, dtype=dtype)
    x = stack_input(size, dtype)
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(x.shape, generator=g, dtype=dtype) for _ in range(size.levels)]
    out_plain, plain = gradients(stack, x, weights, reversible=False)
    out_rev, rev = gradients(stack, x, weights, reversible=True)
    errors = {name: relative_difference(plain[name], rev[name]) for name in plain}
    worst = max(errors, key=errors.get)
    return {"max_relative": errors[worst], "worst": worst, "tensors": len(errors),
            "outputs_equal": all(torch.equal(a, b) for a, b in zip(out_plain, out_rev))}


def measure_stack(size: StackSize, reversible: bool, sizes: dict, threads: int) -> dict:
    """Saved activations (+ RNG states), parameter bytes, step time and (full) peak RSS growth, in MiB / s."""
    stack = build_stack(size, reversible)
    x = stack_input(size)
    saved = saved_activations(lambda: stack(x), exclude=stack.parameters())
    rng = rng_state_bytes(stack)
    row = {"columns": size.columns, "reversible": reversible, "saved_tensors": saved.tensors,
           "saved_mib": saved.mib, "rng_mib": rng / 2**20, "total_mib": (saved.nbytes + rng) / 2**20,
           "param_mib": parameter_bytes(stack) / 2**20,
           "step_seconds": step_seconds(stack, x.clone().requires_grad_(), repeats=sizes["time_repeats"])}
    if sizes["rss"]:
        row["peak_rss_mib"] = peak_rss_growth(size, reversible, threads=max(threads, 1))
    return row


def measure_model(columns: int, reversible: bool, sizes: dict) -> dict:
    """Saved activations (+ RNG states) of one training forward of the revcolv2_fmnist MAE with
    `columns` encoder and `columns` decoder columns, dropout / drop path 0.1."""
    config = load_config("revcolv2_fmnist", [f"model.encoder_columns={columns}", f"model.decoder_columns={columns}",
                                             f"model.reversible={str(reversible).lower()}", "model.dropout=0.1",
                                             "model.drop_path=0.1", *sizes["model_overrides"]])
    torch.manual_seed(0)
    model = build_model(config.method, config.model).train()
    images = torch.rand(sizes["model_batch"], 1, 28, 28, generator=torch.Generator().manual_seed(1))
    saved = saved_activations(lambda: model(images).loss, exclude=[*model.parameters(), *model.buffers()])
    rng = rng_state_bytes(model.encoder) + rng_state_bytes(model.decoder)
    return {"columns": 2 * columns, "reversible": reversible, "saved_mib": saved.mib,
            "total_mib": (saved.nbytes + rng) / 2**20, "embed_dim": config.model.embed_dim}


def growth(rows: list[dict], reversible: bool, key: str = "total_mib") -> dict[int, float]:
    """columns -> rows[key] at that count / at the smallest count, for one path."""
    path = {r["columns"]: r[key] for r in rows if r["reversible"] == reversible}
    base = path[min(path)]
    return {c: v / base for c, v in sorted(path.items())}


def verdicts(results: dict) -> dict:
    """flat: every reversible stack's total (saved + RNG) is <= MAX_REVERSIBLE_GROWTH x the 2-column
    one; linear: every plain stack's growth is >= MIN_LINEAR_FRACTION x (columns / 2); gradients:
    every float64 check is within GRAD_TOLERANCE; model: the reversible RevColV2 MAE's total at its
    largest column count is <= MAX_REVERSIBLE_GROWTH x that at its smallest."""
    stack, model = results["stack"], results["model"]
    low = min(r["columns"] for r in stack)
    rev, plain = growth(stack, True), growth(stack, False)
    return {"flat": all(g <= MAX_REVERSIBLE_GROWTH for g in rev.values()),
            "linear": all(g >= MIN_LINEAR_FRACTION * c / low for c, g in plain.items() if c > low),
            "gradients": all(r["float64"]["max_relative"] <= GRAD_TOLERANCE for r in results["gradients"]),
            "model": max(growth(model, True).items())[1] <= MAX_REVERSIBLE_GROWTH}


def run(ctx: ReproContext) -> Report:
    sizes = QUICK if ctx.quick else FULL
    report = Report("RevCol / RevColV2: activation memory and gradients vs the number of columns", name=ctx.name,
                    quick=ctx.quick)
    base = sizes["stack"]
    require(min(sizes["columns"]) == BASE_COLUMNS, f"the column sweep must start at {BASE_COLUMNS} columns")
    timings, stack_rows, grad_rows, model_rows = {}, [], [], []

    started = time.time()
    for reversible in (False, True):
        for columns in sizes["columns"]:
            stack_rows.append(measure_stack(replace(base, columns=columns), reversible, sizes, ctx.threads))
            r = stack_rows[-1]
            ctx.log(f"{'reversible' if reversible else 'plain'} {columns} columns: {r['total_mib']:.2f} MiB saved"
                    + (f", peak RSS +{r['peak_rss_mib']:.1f} MiB" if "peak_rss_mib" in r else ""))
    timings["memory"] = time.time() - started

    started = time.time()
    for columns in sizes["columns"]:
        size = replace(base, columns=columns, batch=sizes["grad_batch"])
        anchored = replace(size, anchor_every=sizes["anchor_every"])
        row = {"columns": columns, "float64": gradient_check(size, torch.float64),
               "float64_anchored": gradient_check(anchored, torch.float64),
               "float32": gradient_check(size, torch.float32),
               "float32_anchored": gradient_check(anchored, torch.float32)}
        grad_rows.append(row)
        ctx.log(f"gradients, {columns} columns: float64 {row['float64']['max_relative']:.1e}, "
                f"float32 {row['float32']['max_relative']:.1e}")
    timings["gradients"] = time.time() - started

    started = time.time()
    for reversible in (False, True):
        for columns in sizes["model_columns"]:
            model_rows.append(measure_model(columns, reversible, sizes))
    timings["model"] = time.time() - started

    report.results.update(stack=stack_rows, gradients=grad_rows, model=model_rows,
                          seconds={k: round(v, 1) for k, v in timings.items()},
                          sizes={"columns": list(sizes["columns"]), "stack": asdict(base),
                                 "grad_batch": sizes["grad_batch"], "anchor_every": sizes["anchor_every"],
                                 "model_columns": list(sizes["model_columns"]), "model_batch": sizes["model_batch"],
                                 "model_overrides": list(sizes["model_overrides"])})
    write_report(report, report.results, sizes, timings)
    return report


def write_report(report: Report, results: dict, sizes: dict, timings: dict) -> None:
    base, stack, grads, model = sizes["stack"], results["stack"], results["gradients"], results["model"]
    columns = list(sizes["columns"])
    rss = sizes["rss"]
    report.text(
        f"Setup: `mimkit.nn.ColumnStack` of C columns x {base.levels} levels of one ViT block ({base.dim}-d, "
        f"{base.heads} heads, MLP x4), dropout {base.dropout} and drop path {base.drop_path} on (training mode), "
        f"zero initial states, alpha = 0.5, input (batch {base.batch}, {base.tokens} tokens, {base.dim}) float32; "
        f"C in {columns}. Activation memory = the bytes of the unique non-parameter storages autograd saves in one "
        f"forward (`saved_tensors_hooks`, `mimkit.repro.reversible_memory.saved_activations`), plus for the "
        f"reversible path the CPU RNG states its context keeps (one per level and column, "
        f"{torch.get_rng_state().nbytes} bytes each). "
        + ("Peak RSS: growth of the peak resident set of one forward + backward over the RSS before it, in a fresh "
           "process with glibc's mmap threshold fixed (so the allocator's cache is not counted); it includes the "
           "parameter gradients, which both paths allocate. " if rss else "")
        + f"Step time: best of {sizes['time_repeats']} forward + backward on one thread of a shared machine "
        f"(indicative only). Gradient check: the same stacks at batch {sizes['grad_batch']}, loss = sum over levels "
        f"of <w_l, c_l> with fixed random w_l, the same dropout / drop-path draws on both paths (the reversible "
        f"backward restores the forward's RNG state); for each of the {grads[0]['float64']['tensors']} tensors "
        f"(input and every parameter) ||g_rev - g_plain|| / ||g_plain||, max reported. Whole model: "
        f"`revcolv2_fmnist` ({model[0]['embed_dim']}-d, 4 levels, 28 px, 75% masking) with k encoder + k decoder "
        f"columns, k in {list(sizes['model_columns'])}, dropout / drop path 0.1, batch {sizes['model_batch']}. "
        f"No training. Wall time: memory + timing {timings['memory']:.0f} s, gradient checks "
        f"{timings['gradients']:.0f} s, whole model {timings['model']:.0f} s.")

    rev_growth, plain_growth = growth(stack, True), growth(stack, False)
    by = {(r["reversible"], r["columns"]): r for r in stack}
    rows = []
    for c in columns:
        p, r = by[False, c], by[True, c]
        row = [c, f"{p['total_mib']:.2f}", f"{r['saved_mib']:.2f}", f"{r['rng_mib']:.3f}", f"{r['total_mib']:.2f}",
               f"{plain_growth[c]:.2f}x", f"{rev_growth[c]:.2f}x", p["saved_tensors"], r["saved_tensors"]]
        if rss:
            row += [f"{p['peak_rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}", f"{p['param_mib']:.1f}"]
        row += [f"{p['step_seconds']:.2f}", f"{r['step_seconds']:.2f}"]
        rows.append(row)
    header = ["columns", "plain MiB", "rev. saved MiB", "rev. RNG MiB", "rev. total MiB", "plain growth",
              "rev. growth", "plain tensors", "rev. tensors"]
    if rss:
        header += ["plain peak RSS MiB", "rev. peak RSS MiB", "param grads MiB"]
    header += ["plain step s", "rev. step s"]
    report.table(header, rows, caption="Activation memory of one training step of the ColumnStack (growth = / the "
                                       f"{BASE_COLUMNS}-column value):")
    if rss:
        net = {rev: {c: by[rev, c]["peak_rss_mib"] - by[rev, c]["param_mib"] for c in columns} for rev in (False, True)}
        results["peak_rss_minus_grads"] = {str(k): {str(c): v for c, v in d.items()} for k, d in net.items()}
        report.text(
            f"Peak RSS minus the parameter gradients, {columns[0]} -> {columns[-1]} columns: plain "
            f"{net[False][columns[0]]:.0f} -> {net[False][columns[-1]]:.0f} MiB "
            f"({net[False][columns[-1]] / net[False][columns[0]]:.2f}x), reversible {net[True][columns[0]]:.0f} -> "
            f"{net[True][columns[-1]]:.0f} MiB ({net[True][columns[-1]] / net[True][columns[0]]:.2f}x): the "
            f"recomputation in backward holds one level's graph at a time, so the peak stays flat too (its base is "
            f"that graph plus the step's fixed costs).")
    report.plot("memory_vs_columns.png",
                {"plain autograd": (columns, [by[False, c]["total_mib"] for c in columns]),
                 "reversible": (columns, [by[True, c]["total_mib"] for c in columns])},
                xlabel="columns", ylabel="saved activations (MiB)", xticks=columns,
                title="Activation memory of one step vs columns")

    k = sizes["anchor_every"]
    rows = [[g["columns"], f"{g['float64']['max_relative']:.1e}", g["float64"]["worst"],
             "yes" if g["float64"]["outputs_equal"] else "no", f"{g['float64_anchored']['max_relative']:.1e}",
             f"{g['float32']['max_relative']:.1e}", f"{g['float32_anchored']['max_relative']:.1e}"] for g in grads]
    report.table(["columns", "float64 max rel. diff", "largest at", "outputs bitwise equal",
                  f"float64, anchor_every={k}", "float32", f"float32, anchor_every={k}"], rows,
                 caption="Reversible vs plain gradients (max over the input and all parameters):")
    log10 = lambda v: float(torch.tensor(max(v, 1e-20)).log10())  # noqa: E731 (plot on a log scale)
    report.plot("gradient_error_vs_columns.png",
                {label: (columns, [log10(g[key]["max_relative"]) for g in grads])
                 for key, label in (("float64", "float64"), ("float64_anchored", f"float64, anchor_every={k}"),
                                    ("float32", "float32"), ("float32_anchored", f"float32, anchor_every={k}"))},
                xlabel="columns", ylabel="log10 max relative gradient difference", xticks=columns,
                title="Reversible vs plain gradients")
    first, last = grads[0], grads[-1]
    factor = (last["float64"]["max_relative"] / first["float64"]["max_relative"]) ** (
        1 / (last["columns"] - first["columns"]))
    results["float64_error_factor_per_column"] = factor
    report.text(
        f"The inversion c^(i-1) = (c^(i) - F) / alpha amplifies the rounding of every column walked back (by 1 / |alpha| "
        f"= 2 from the division alone, more through F's input from the level above, itself inverted): here the float64 "
        f"difference grows about {factor:.1f}x per column, from {first['float64']['max_relative']:.0e} at "
        f"{first['columns']} to {last['float64']['max_relative']:.0e} at {last['columns']} columns, and float32 without "
        f"anchors reaches {last['float32']['max_relative']:.0e} at {last['columns']}. That is rounding, not a wrong "
        f"backward: `anchor_every={k}` keeps the exact states every {k} columns ({base.levels} more saved states per "
        f"{k} columns) and the difference stays that of {k} columns at any depth "
        f"({last['float64_anchored']['max_relative']:.0e} in float64, {last['float32_anchored']['max_relative']:.0e} "
        f"in float32 at {last['columns']} columns). The gradient verdict (above) is on the stacks without anchors.")

    mcols = sorted({r["columns"] for r in model})
    mby = {(r["reversible"], r["columns"]): r for r in model}
    mrev, mplain = growth(model, True), growth(model, False)
    report.table(["encoder + decoder columns", "plain MiB", "reversible MiB", "plain growth", "rev. growth"],
                 [[c, f"{mby[False, c]['total_mib']:.2f}", f"{mby[True, c]['total_mib']:.2f}", f"{mplain[c]:.2f}x",
                   f"{mrev[c]:.2f}x"] for c in mcols],
                 caption="The whole RevColV2 MAE (revcolv2_fmnist sizes), activation memory of one training forward:")
    report.plot("model_memory_vs_columns.png",
                {"plain autograd": (mcols, [mby[False, c]["total_mib"] for c in mcols]),
                 "reversible": (mcols, [mby[True, c]["total_mib"] for c in mcols])},
                xlabel="encoder + decoder columns", ylabel="saved activations (MiB)", xticks=mcols,
                title="RevColV2 MAE: activation memory vs columns")
    add_claims(report, results)


def add_claims(report: Report, results: dict) -> None:
    v = verdicts(results)
    stack, grads, model = results["stack"], results["gradients"], results["model"]
    rev, plain = growth(stack, True), growth(stack, False)
    cols = sorted(rev)
    show = lambda g: ", ".join(f"{c}: {g[c]:.2f}x" for c in cols[1:])  # noqa: E731
    mib = {(r["reversible"], r["columns"]): r["total_mib"] for r in stack}
    report.claim("with reversible columns the activation memory does not grow with the number of columns",
                 paper="memory does not grow with the columns except for the column boundary states (RevCol, RevColV2)",
                 ours=f"reversible {mib[True, cols[0]]:.2f} MiB at {cols[0]} columns, {mib[True, cols[-1]]:.2f} MiB at "
                      f"{cols[-1]}; growth vs {cols[0]} columns {show(rev)} (rule: all <= {MAX_REVERSIBLE_GROWTH}x)",
                 reproduced=v["flat"])
    report.claim("a plain (non-reversible) network's activation memory grows linearly with the columns",
                 paper="plain backprop stores every column's activations (linear in depth)",
                 ours=f"plain {mib[False, cols[0]]:.1f} MiB at {cols[0]} columns, {mib[False, cols[-1]]:.1f} MiB at "
                      f"{cols[-1]}; growth {show(plain)} (rule: >= {MIN_LINEAR_FRACTION} x proportional, e.g. >= 3x "
                      f"for 8 / 2)", reproduced=v["linear"])
    worst = max(g["float64"]["max_relative"] for g in grads)
    per_count = ", ".join(f"{g['columns']}: {g['float64']['max_relative']:.0e}" for g in grads)
    report.claim("the reversible backward gives the same gradients as plain autograd (dropout and drop path on)",
                 paper="gradients match normal backprop to ~3e-6 (RevCol v1 reference, float32)",
                 ours=f"float64 max relative difference {worst:.1e} over {len(grads)} column counts "
                      f"({per_count}); "
                      f"float32 without anchors up to {max(g['float32']['max_relative'] for g in grads):.0e}; with "
                      f"anchors every {results['sizes']['anchor_every']} columns float64 "
                      f"{max(g['float64_anchored']['max_relative'] for g in grads):.0e}, float32 "
                      f"{max(g['float32_anchored']['max_relative'] for g in grads):.0e} "
                      f"(rule: float64 without anchors <= {GRAD_TOLERANCE:.0e} at every count)",
                 reproduced=v["gradients"])
    mrev, mplain = growth(model, True), growth(model, False)
    low, high = min(mrev), max(mrev)
    report.claim("a whole reversible RevColV2 MAE keeps its activation memory flat as columns are added",
                 paper="RevColV2 keeps the memory advantage of reversible columns in its encoder-decoder",
                 ours=f"{low} -> {high} encoder + decoder columns: reversible {mrev[high]:.2f}x, plain "
                      f"{mplain[high]:.2f}x (rule: reversible <= {MAX_REVERSIBLE_GROWTH}x)", reproduced=v["model"])
