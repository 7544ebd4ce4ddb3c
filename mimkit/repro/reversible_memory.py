"""How much memory a training step of a ColumnStack keeps: saved activations, RNG states, peak RSS.

    stack = build_stack(StackSize(columns=8), reversible=True)
    saved = saved_activations(lambda: stack(x), exclude=stack.parameters())   # x: (N, L, D)
    saved.nbytes, saved.tensors            # bytes of the unique storages kept for backward, their count
    rng_state_bytes(stack)                 # + what the reversible context keeps besides tensors
    peak_rss_growth(StackSize(columns=8), reversible=True)   # MiB, fresh process (Linux)

`saved_activations` runs a forward under torch.autograd.graph.saved_tensors_hooks and records every
tensor autograd keeps for backward; storages shared by several saved tensors count once, and the
storages of `exclude` (the parameters) not at all. That is the activation memory of the step:
everything backward needs besides the weights. The reversible path also keeps one CPU RNG state per
level and column on its autograd context (to redraw dropout masks), which is not a saved tensor;
`rng_state_bytes` counts it. `peak_rss_growth` runs forward + backward in a fresh Python process
(the allocator of a long-lived one keeps freed memory) and returns how far its peak resident set
rose above the RSS before the forward: the activations, any peak during backward, and the
parameter gradients (allocated in backward, as many bytes as the parameters, on both paths). The
child fixes glibc's mmap threshold at 64 KiB (MALLOC_MMAP_THRESHOLD_): by default glibc raises the
threshold after each large free and then serves big tensors from its heap, whose freed pages it
keeps, so the peak would count the allocator's cache (measured: +80 MiB from 2 to 8 columns of the
reversible stack with the default, +19 MiB = the parameter gradients with the fixed threshold).
"""
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from ..nn.reversible import ColumnStack


@dataclass(frozen=True)
class StackSize:
    """A ColumnStack of `columns` columns x `levels` levels of one ViT block (dim, heads), with
    dropout / drop path (so the RNG restoration is exercised), run on (batch, tokens, dim) inputs;
    anchor_every as ColumnStack's (reversible only)."""

    columns: int = 4
    levels: int = 4
    dim: int = 128
    heads: int = 4
    batch: int = 32
    tokens: int = 50
    dropout: float = 0.1
    drop_path: float = 0.1
    anchor_every: int = 0


@dataclass
class SavedActivations:
    """nbytes: bytes of the unique non-excluded storages saved for backward; tensors: how many
    tensors were saved (parameters included, shared storages counted per tensor)."""

    nbytes: int
    tensors: int

    @property
    def mib(self) -> float:
        return self.nbytes / 2**20


def build_stack(size: StackSize, reversible: bool, dtype: torch.dtype = torch.float32, seed: int = 0) -> ColumnStack:
    """The seeded ColumnStack of `size` in training mode (so dropout / drop path draw masks)."""
    torch.manual_seed(seed)
    stack = ColumnStack(size.columns, size.levels, size.dim, size.heads, dropout=size.dropout,
                        drop_path=size.drop_path, reversible=reversible, anchor_every=size.anchor_every)
    return stack.to(dtype).train()


def stack_input(size: StackSize, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    """A seeded (batch, tokens, dim) input."""
    return torch.randn(size.batch, size.tokens, size.dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def saved_activations(forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> SavedActivations:
    """Run forward() (with autograd recording) and measure what it saves for backward; the output
    is dropped afterwards, so nothing stays alive."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages, count = {}, 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()  # every saved storage stays alive until
        return t                                             # the output is dropped: pointers are unique

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return SavedActivations(sum(storages.values()), count)


def rng_state_bytes(stack: ColumnStack) -> int:
    """What a reversible stack's autograd context keeps besides saved tensors: one CPU RNG state
    per level and column (0 for a plain stack)."""
    if not stack.reversible:
        return 0
    return len(stack.columns) * stack.n_levels * torch.get_rng_state().nbytes


def step_seconds(stack: ColumnStack, x: torch.Tensor, repeats: int = 3) -> float:
    """Best wall time of `repeats` forward + backward passes of sum(outputs)."""
    best = float("inf")
    for _ in range(repeats):
        stack.zero_grad(set_to_none=True)
        start = time.perf_counter()
        sum(o.sum() for o in stack(x)).backward()
        best = min(best, time.perf_counter() - start)
    return best


def parameter_bytes(stack: ColumnStack) -> int:
    """Bytes of the parameters, = those of their gradients after a backward."""
    return sum(p.numel() * p.element_size() for p in stack.parameters())


def peak_rss_growth(size: StackSize, reversible: bool, threads: int = 1) -> float:
    """MiB by which the peak RSS of one forward + backward exceeds the RSS before it, measured in a
    fresh process (Linux: /proc/self/status and clear_refs; see the module doc)."""
    spec = json.dumps({"size": asdict(size), "reversible": reversible, "threads": threads})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-m", __name__, spec], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _rss_child(spec: dict) -> float:
    torch.set_num_threads(spec["threads"])
    size = StackSize(**spec["size"])
    stack = build_stack(size, spec["reversible"])
    x = stack_input(size).requires_grad_()
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to the current RSS
        handle.write("5")
    before = _proc_status_kib("VmRSS")
    sum(o.sum() for o in stack(x)).backward()
    return (_proc_status_kib("VmHWM") - before) / 1024


if __name__ == "__main__":  # the child of peak_rss_growth
    print(json.dumps({"mib": _rss_child(json.loads(sys.argv[1]))}))
