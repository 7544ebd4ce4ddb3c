"""Reversible columns (RevCol, RevColV2): a stack of columns that keeps several levels of features.

Every column updates each level l = 0..n-1 in turn from the level below in the same column and
the level above in the previous column:

    c_l^(i) = F_l(c_{l-1}^(i), c_{l+1}^(i-1)) + alpha_l * c_l^(i-1)

with c_{-1}^(i) = the column input x (the same for every column) and no c_{l+1} term at the top
level. F_l(a, b) = blocks_l(LN_a(a) + LN_b(b)): each input is layer-normalised (learned affine), the
two are summed and run through the level's ViT blocks (mimkit.nn.Block; isotropic, so no up/down-
sampling as in RevColV2). The norms stand in for RevCol v1's fusion, whose down/up-sampling ends in a
LayerNorm: without them every level adds up all the states below and beside it, the states grow
geometrically with levels and columns, and the blocks' branches become negligible next to them.
alpha_l is a learned per-channel scale (D,). Because each update is invertible,
c_l^(i-1) = (c_l^(i) - F_l(...)) / alpha_l, the reversible path stores only the stack's boundary
(x and the last column's states): in backward it walks the columns backwards, recomputing each F_l
under the RNG and autocast state of the forward, so dropout / drop path draw the very same masks,
and inverting the update to get the previous column's states. Activation memory therefore does not
grow with the number of columns. A plain path (`reversible=False`) computes the same function with
ordinary autograd and is the reference in tests.

A top-down stack (RevColV2's decoder) is the same recurrence with the levels visited from the top:
its input enters level n-1, and level 0 has no "previous column, level below" term.
"""
import contextlib

import torch
from torch import nn

from .block import Block

ALPHA_MIN = 1e-3


def clamp_scale(alpha: torch.Tensor, minimum: float = ALPHA_MIN) -> torch.Tensor:
    """alpha (D,) -> sign(alpha) * max(|alpha|, minimum) (sign of 0 = +), so the update stays
    invertible. The gradient passes straight through the clamp (d out / d alpha = 1), so an alpha
    that drifted into (-minimum, minimum) is not frozen there."""
    sign = torch.where(alpha < 0, -1.0, 1.0).to(alpha.dtype)
    clamped = sign * alpha.detach().abs().clamp_min(minimum)
    return alpha + (clamped - alpha.detach())


class ColumnLevel(nn.Module):
    """One level of one column: F_l(lower, upper) = blocks(norm_lower(lower) + norm_upper(upper)),
    and its scale alpha_l.

    lower, upper: (N, L, D) -> (N, L, D); upper is None at the last level updated (the top level,
    the bottom one for top-down), which then has no norm_upper (has_upper=False).
    """

    def __init__(self, dim: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 dropout: float = 0.0, alpha_init: float = 0.5, norm_eps: float = 1e-6, attn_impl: str = "auto",
                 has_upper: bool = True):
        super().__init__()
        self.norm_lower = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_upper = nn.LayerNorm(dim, eps=norm_eps) if has_upper else None
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, dropout=dropout,
                                          norm_eps=norm_eps, attn_impl=attn_impl) for _ in range(depth))
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha_init)))

    def forward(self, lower: torch.Tensor, upper: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_lower(lower)
        if upper is not None:
            h = h + self.norm_upper(upper)
        for block in self.blocks:
            h = block(h)
        return h

    def parameters_of_f(self) -> list[nn.Parameter]:
        """The parameters of F_l (everything but alpha)."""
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def scale(self) -> torch.Tensor:
        """The alpha the update uses: (D,), |alpha| >= ALPHA_MIN (see clamp_scale)."""
        return clamp_scale(self.alpha)


class Column(nn.Module):
    """The levels of one column; levels[l] is level l (0 = lowest). The level updated last (the top,
    or level 0 when top_down) has no "previous column, next level" input."""

    def __init__(self, n_levels: int, dim: int, num_heads: int, top_down: bool = False, **level_options):
        super().__init__()
        last = 0 if top_down else n_levels - 1
        self.levels = nn.ModuleList(ColumnLevel(dim, num_heads, has_upper=l != last, **level_options)
                                    for l in range(n_levels))


def run_columns(levels: list[list[ColumnLevel]], alphas: list[list[torch.Tensor]], x: torch.Tensor,
                states: list[torch.Tensor], rng: list | None = None) -> list[torch.Tensor]:
    """The recurrence over columns, levels in update order (index 0 receives x).

    levels[i][j], alphas[i][j] (D,): column i, j-th level updated; states: one (N, L, D) per level
    (the states before the first column). With `rng` a list, the RNG state before each F is
    appended to it (for the reversible backward). Returns the last column's states."""
    states = list(states)
    top = len(states) - 1
    for column, scales in zip(levels, alphas):
        for j, (level, alpha) in enumerate(zip(column, scales)):
            if rng is not None:
                rng.append(_rng_state(x))
            lower = x if j == 0 else states[j - 1]
            upper = states[j + 1] if j < top else None
            states[j] = level(lower, upper) + alpha * states[j]
    return states


def _cuda_devices(x: torch.Tensor) -> list[int]:
    return [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []


def _rng_state(x: torch.Tensor) -> tuple:
    """(CPU generator state, [CUDA generator state of x's device])."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in _cuda_devices(x)]


def _set_rng_state(x: torch.Tensor, state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for device, s in zip(_cuda_devices(x), cuda):
        torch.cuda.set_rng_state(s, device)


def _autocast_state() -> list[tuple[str, bool, torch.dtype]]:
    types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [(t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t)) for t in types]


class ReversibleColumnsFunction(torch.autograd.Function):
    """Forward without a graph, saving only x and the last column's states; backward recomputes.

    apply(levels, n_levels, zero_start, anchor_every, x, *states, *alphas, *params): levels as in
    `run_columns`; zero_start: the states are zeros (then the first column's are not recovered by
    inversion, which would give rounding noise instead of exact zeros); anchor_every: k > 0 also
    saves the states after every k-th column, and the backward restarts its inversion from them
    (bounding the float error of inverting through many columns); alphas the n_columns * n_levels effective
    scales in update order; params every parameter of the levels in the same order (inputs only so
    that their gradients are returned, never saved)."""

    @staticmethod
    def forward(ctx, levels, n_levels, zero_start, anchor_every, x, *tensors):
        n_cols = len(levels)
        states = tensors[:n_levels]
        flat_alphas = tensors[n_levels:n_levels + n_cols * n_levels]
        alphas = [list(flat_alphas[i * n_levels:(i + 1) * n_levels]) for i in range(n_cols)]
        ctx.levels, ctx.n_levels, ctx.alphas, ctx.zero_start = levels, n_levels, alphas, zero_start
        ctx.autocast = _autocast_state()
        ctx.rng = []
        ctx.anchored = [i for i in range(n_cols - 1) if anchor_every and (i + 1) % anchor_every == 0]
        out, anchors = list(states), []
        for i in range(n_cols):
            out = run_columns(levels[i:i + 1], alphas[i:i + 1], x, out, rng=ctx.rng)
            if i in ctx.anchored:
                anchors += out
        ctx.save_for_backward(x, *out, *anchors)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        x, *saved = ctx.saved_tensors
        levels, n_levels, alphas = ctx.levels, ctx.n_levels, ctx.alphas
        states = saved[:n_levels]
        anchors = {i: saved[n_levels * (k + 1):n_levels * (k + 2)] for k, i in enumerate(ctx.anchored)}
        top = n_levels - 1
        states = [s.detach() for s in states]
        grads = [torch.zeros_like(s) if g is None else g for s, g in zip(states, grads)]
        grad_x = torch.zeros_like(x)
        grad_alphas = [[None] * n_levels for _ in levels]
        grad_params = [[None] * n_levels for _ in levels]
        rng = iter(reversed(ctx.rng))
        with contextlib.ExitStack() as scope:
            scope.enter_context(torch.random.fork_rng(devices=_cuda_devices(x)))
            for device_type, enabled, dtype in ctx.autocast:
                scope.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled))
            for i in reversed(range(len(levels))):
                if i in anchors:  # the exact states after column i replace the inverted ones
                    states = [t.detach() for t in anchors[i]]
                for j in reversed(range(n_levels)):
                    # states[j] is c_j^(i); states[j-1] still c_{j-1}^(i); states[j+1] already c_{j+1}^(i-1)
                    level, alpha = levels[i][j], alphas[i][j].detach()
                    lower = (x if j == 0 else states[j - 1]).detach().requires_grad_()
                    upper = states[j + 1].detach().requires_grad_() if j < top else None
                    params = [p for p in level.parameters_of_f() if p.requires_grad]
                    _set_rng_state(x, next(rng))
                    with torch.enable_grad():
                        f = level(lower, upper)
                    if i == 0 and ctx.zero_start:
                        previous = torch.zeros_like(states[j])
                    else:
                        previous = (states[j] - f.detach()) / alpha  # c_j^(i-1)
                    inputs = [lower] + ([upper] if upper is not None else []) + params
                    found = torch.autograd.grad(f, inputs, grads[j], allow_unused=True)
                    if j == 0:
                        grad_x = grad_x + found[0]
                    else:
                        grads[j - 1] = grads[j - 1] + found[0]
                    if upper is not None:
                        grads[j + 1] = grads[j + 1] + found[1]
                    grad_params[i][j] = dict(zip(map(id, params), found[len(inputs) - len(params):]))
                    grad_alphas[i][j] = (grads[j] * previous).reshape(-1, previous.shape[-1]).sum(0)
                    grads[j] = grads[j] * alpha  # now dL / d c_j^(i-1), completed by the levels below
                    states[j] = previous
        flat_params = []
        for i, column in enumerate(levels):
            for j, level in enumerate(column):
                table = grad_params[i][j]
                flat_params += [table.get(id(p)) for p in level.parameters_of_f()]
        flat_alphas = [g for row in grad_alphas for g in row]
        return (None, None, None, None, grad_x, *grads, *flat_alphas, *flat_params)


class ColumnStack(nn.Module):
    """n_columns columns of n_levels levels of ViT blocks, run reversibly or with plain autograd.

    forward(x (N, L, D), states=None) -> list of n_levels tensors (N, L, D), index = level.
    states: the levels' states before the first column (default zeros, as RevCol's first column).
    top_down: visit the levels from the top (x enters level n_levels-1), as RevColV2's decoder.
    anchor_every: with reversible, k > 0 also keeps the states after every k-th column (memory
    grows by n_levels states per k columns) so the float32 error of inverting stays that of k columns.
    reversible: recompute activations in backward instead of storing them (same values, same
    gradients up to rounding); only used when autograd is recording.
    """

    def __init__(self, n_columns: int, n_levels: int, dim: int, num_heads: int, depth: int = 1,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, dropout: float = 0.0, alpha_init: float = 0.5,
                 norm_eps: float = 1e-6, attn_impl: str = "auto", top_down: bool = False, reversible: bool = True,
                 anchor_every: int = 0):
        super().__init__()
        if n_columns < 1 or n_levels < 1 or depth < 1:
            raise ValueError(f"n_columns, n_levels and depth must be >= 1, got {n_columns}, {n_levels}, {depth}")
        if anchor_every < 0:
            raise ValueError(f"anchor_every must be >= 0, got {anchor_every}")
        self.n_levels, self.top_down, self.reversible, self.anchor_every = n_levels, top_down, reversible, anchor_every
        self.columns = nn.ModuleList(
            Column(n_levels, dim, num_heads, depth=depth, mlp_ratio=mlp_ratio, drop_path=drop_path, dropout=dropout,
                   alpha_init=alpha_init, norm_eps=norm_eps, attn_impl=attn_impl, top_down=top_down)
            for _ in range(n_columns))

    def update_order(self, items: list) -> list:
        """Per-level items (index = level) -> the order the levels are updated in."""
        return list(items)[::-1] if self.top_down else list(items)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        zero_start = states is None
        if zero_start:
            states = [torch.zeros_like(x) for _ in range(self.n_levels)]
        if len(states) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} level states, got {len(states)}")
        levels = [self.update_order(column.levels) for column in self.columns]
        alphas = [[level.scale() for level in column] for column in levels]
        ordered = self.update_order(states)
        if self.reversible and torch.is_grad_enabled():
            params = [p for column in levels for level in column for p in level.parameters_of_f()]
            flat_alphas = [a for row in alphas for a in row]
            out = ReversibleColumnsFunction.apply(levels, self.n_levels, zero_start, self.anchor_every, x, *ordered, *flat_alphas, *params)
        else:
            out = run_columns(levels, alphas, x, ordered)
        return self.update_order(out)
