"""Reversible columns: the recurrence against a hand-written one, the reversible backward against
plain autograd (float64, so the 1e-5 relative check is about the algorithm, not float32 rounding of
the inversion) with dropout and drop path active, RNG / autocast restoration, the alpha clamp, and
that the reversible path saves the same few tensors whatever the number of columns."""
import pytest
import torch

from mimkit.nn.reversible import ALPHA_MIN, ColumnStack, clamp_scale


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def stack(columns=3, levels=3, top_down=False, dropout=0.1, drop_path=0.2, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    s = ColumnStack(columns, levels, dim=8, num_heads=2, dropout=dropout, drop_path=drop_path, top_down=top_down,
                    **kw).to(dtype)
    with torch.no_grad():  # alphas off their common init value, of both signs
        for column in s.columns:
            for level in column.levels:
                level.alpha.uniform_(0.3, 1.2).mul_(torch.where(torch.rand(8) < 0.3, -1.0, 1.0).to(dtype))
    return s.train()


def inputs(levels, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 8, generator=g, dtype=dtype).requires_grad_()
    states = [torch.randn(3, 5, 8, generator=g, dtype=dtype).requires_grad_() for _ in range(levels)]
    weights = [torch.randn(3, 5, 8, generator=g, dtype=dtype) for _ in range(levels)]
    return x, states, weights


def run(s, reversible, x, states, weights, between=None):
    """Outputs and the gradients of sum(w_l * c_l) w.r.t. x, the initial states and every parameter."""
    s.reversible = reversible
    s.zero_grad(set_to_none=True)
    for t in [x, *states]:
        t.grad = None
    torch.manual_seed(7)  # the same dropout / drop-path masks for both paths
    out = s(x, states)
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    if between is not None:
        between()
    loss.backward()
    grads = {"x": x.grad.clone(), **{f"state{i}": t.grad.clone() for i, t in enumerate(states)}}
    grads.update({n: p.grad.clone() for n, p in s.named_parameters()})
    return [o.detach() for o in out], grads


def assert_close_relative(a: dict, b: dict, tol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        err = (a[name] - b[name]).norm() / a[name].norm().clamp_min(1e-30)
        assert err < tol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("top_down", [False, True])
def test_reversible_backward_equals_plain_autograd_with_dropout_and_drop_path(top_down):
    s = stack(top_down=top_down)
    x, states, weights = inputs(3)
    out_plain, g_plain = run(s, False, x, states, weights)
    out_rev, g_rev = run(s, True, x, states, weights)
    for a, b in zip(out_plain, out_rev):
        assert torch.equal(a, b)
    assert len(g_plain) == 1 + 3 + sum(1 for _ in s.parameters())
    assert all(g.abs().sum() > 0 for g in g_plain.values())  # every gradient is exercised
    assert_close_relative(g_plain, g_rev)


def test_randomness_is_active_and_restored_by_the_recomputation():
    s = stack()
    x, states, weights = inputs(3)
    out_a, _ = run(s, False, x, states, weights)
    torch.manual_seed(8)
    assert not torch.equal(s(x, states)[0], out_a[0])  # dropout / drop path really draw random numbers
    _, g_plain = run(s, False, x, states, weights)
    # the global RNG moves on between forward and backward: the recomputation must not care
    _, g_rev = run(s, True, x, states, weights, between=lambda: torch.rand(1000))
    assert_close_relative(g_plain, g_rev)
    # and the backward leaves the caller's RNG where it was
    s.reversible = True
    torch.manual_seed(3)
    out = s(x, states)
    before = torch.get_rng_state()
    sum(o.sum() for o in out).backward()
    assert torch.equal(torch.get_rng_state(), before)


def test_recurrence_matches_the_formula_written_out():
    for top_down in (False, True):
        s = stack(columns=2, levels=2, top_down=top_down, dropout=0.0, drop_path=0.0).eval()
        x, (s0, s1), _ = inputs(2)
        out = s(x, [s0, s1])
        c = [s0, s1]
        for column in s.columns:
            f0, f1 = column.levels
            if top_down:  # x enters the top level; the top sees the previous column's level below
                c[1] = f1(x, c[0]) + f1.scale() * c[1]
                c[0] = f0(c[1]) + f0.scale() * c[0]
            else:
                c[0] = f0(x, c[1]) + f0.scale() * c[0]
                c[1] = f1(c[0]) + f1.scale() * c[1]
        assert torch.allclose(out[0], c[0], atol=1e-12) and torch.allclose(out[1], c[1], atol=1e-12)
    level = s.columns[0].levels[1]  # in a top-down stack level 1 is the first updated: it has both inputs
    lower, upper = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    fused = level.norm_lower(lower) + level.norm_upper(upper)  # F_l(a, b) = blocks(LN(a) + LN(b))
    assert torch.allclose(level(lower, upper), level.blocks[0](fused))
    assert s.columns[0].levels[0].norm_upper is None and stack(top_down=False).columns[0].levels[-1].norm_upper is None


def test_default_states_are_zeros():
    s = stack(dropout=0.0, drop_path=0.0).eval()
    x, _, _ = inputs(3)
    zeros = [torch.zeros_like(x) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(s(x), s(x, zeros)))


def test_alpha_is_clamped_away_from_zero_keeping_its_sign_with_a_straight_through_gradient():
    alpha = torch.tensor([0.0, 1e-5, -1e-5, -1e-3, 0.5, -2.0], requires_grad=True)
    scale = clamp_scale(alpha)
    assert torch.equal(scale.detach(), torch.tensor([ALPHA_MIN, ALPHA_MIN, -ALPHA_MIN, -1e-3, 0.5, -2.0]))
    w = torch.arange(1.0, 7.0)
    (scale * w).sum().backward()
    assert torch.equal(alpha.grad, w)  # a clamped alpha still gets its gradient and can leave the clamp


def test_tiny_alpha_is_clamped_in_the_update_and_stays_invertible():
    s = stack(columns=2, levels=2)
    with torch.no_grad():
        s.columns[1].levels[0].alpha.fill_(1e-7)
        s.columns[1].levels[0].alpha[:4] = -1e-7
    x, states, weights = inputs(2)
    s.eval()
    out = s(x, states)
    level = s.columns[1].levels[0]
    expected_scale = torch.tensor([-ALPHA_MIN] * 4 + [ALPHA_MIN] * 4, dtype=torch.float64)
    assert torch.equal(level.scale().detach(), expected_scale)
    # the update used the clamped scale: recompute column 2, level 0 from column 1's output
    first = ColumnStack(1, 2, dim=8, num_heads=2).to(torch.float64).eval()
    first.columns[0].load_state_dict(s.columns[0].state_dict())
    c = first(x, states)
    assert torch.allclose(out[0], level(x, c[1]) + expected_scale * c[0], atol=1e-12)
    s.train()
    _, g_plain = run(s, False, x, states, weights)
    _, g_rev = run(s, True, x, states, weights)
    assert_close_relative(g_plain, g_rev)


def test_backward_recomputes_under_the_forward_autocast_state():
    s = stack(columns=2, levels=2, dtype=torch.float32, dropout=0.0, drop_path=0.0)
    seen = []
    s.columns[0].levels[0].register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    x, states, _ = inputs(2, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s(x, states)
    sum(o.float().sum() for o in out).backward()
    assert seen == [True, True]  # the forward, then the recomputation in backward, both under autocast
    assert x.grad is not None and torch.isfinite(x.grad).all()


def saved_tensor_count(s, x, states) -> int:
    """Non-parameter tensors autograd saves for backward in one forward."""
    params = {p.data_ptr() for p in s.parameters()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        s(x, states)
    return sum(1 for t in saved if t.data_ptr() not in params)


def test_reversible_path_saves_only_the_stack_boundary_whatever_the_number_of_columns():
    x, states, _ = inputs(3)
    for columns in (1, 2, 4):
        s = stack(columns=columns, levels=3)
        s.reversible = True
        assert saved_tensor_count(s, x, states) == 1 + 3  # x and the last column's 3 states
        s.reversible = False
        assert saved_tensor_count(s, x, states) > 10 * columns


def test_anchors_bound_the_float32_inversion_error_and_are_the_only_extra_saved_states():
    x, _, weights = inputs(3, dtype=torch.float32)
    errors = {}
    for anchor_every in (0, 1):
        torch.manual_seed(0)
        s = ColumnStack(8, 3, dim=8, num_heads=2, dropout=0.1, drop_path=0.2, anchor_every=anchor_every).train()
        grads = {}
        for reversible in (False, True):
            s.reversible = reversible
            s.zero_grad(set_to_none=True)
            x.grad = None
            torch.manual_seed(7)
            sum((o * w).sum() for o, w in zip(s(x), weights)).backward()
            grads[reversible] = {"x": x.grad.clone(), **{n: p.grad.clone() for n, p in s.named_parameters()}}
        errors[anchor_every] = max(((grads[False][n] - grads[True][n]).norm() / grads[False][n].norm()).item()
                                   for n in grads[False])
        s.reversible = True
        assert saved_tensor_count(s, x, None) == 1 + 3 * (1 + (7 if anchor_every else 0))
    # measured: 6e-3 through 8 columns of float32 inversion, 7e-7 when anchored after every column
    assert errors[1] < 1e-5 and errors[0] > 1e-4
