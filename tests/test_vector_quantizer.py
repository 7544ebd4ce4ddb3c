"""VectorQuantizer: straight-through gradient, codebook gradient, EMA update (hand-computed), k-means
init, dead-code restart, usage statistics, and identical codebooks across 2 gloo processes."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from mimkit.nn.vector_quantizer import VectorQuantizer, code_perplexity, kmeans

torch.set_num_threads(1)


def set_codebook(vq: VectorQuantizer, rows) -> None:
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor(rows, dtype=torch.float32))


# ------------------------------------------------------------------ gradients
def test_straight_through_gradient_is_identity_and_forward_value_is_the_code():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=3, codebook_size=5).train()
    z = torch.randn(2, 4, 3, requires_grad=True)
    out = vq(z)
    codebook = vq.embedding.weight.detach()
    assert torch.equal(out.codes, torch.cdist(z.detach().view(-1, 3), codebook).argmin(1).view(2, 4))
    assert torch.allclose(out.quantized, codebook[out.codes], atol=1e-6)
    upstream = torch.randn(2, 4, 3)
    (out.quantized * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)  # d quantized / d z = identity
    # the task loss alone gives the codebook no gradient: it learns only through out.loss
    assert vq.embedding.weight.grad is None or not vq.embedding.weight.grad.any()


def test_codebook_and_commitment_gradients_in_gradient_mode():
    vq = VectorQuantizer(dim=2, codebook_size=2, beta=0.25).train()
    set_codebook(vq, [[0.0, 0.0], [4.0, 4.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 4.0]], requires_grad=True)
    out = vq(z)
    assert out.codes.tolist() == [0, 0, 1]
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4.0, 4.0]])
    m = z.numel()
    assert out.loss.item() == pytest.approx(1.25 * ((z.detach() - q) ** 2).sum().item() / m)
    out.loss.backward()
    # codebook term mean((e - sg z)^2): d/de_k = 2 * sum_{i in k} (e_k - z_i) / (M * d)
    expected = torch.stack([2 * (q[:2] - z.detach()[:2]).sum(0), 2 * (q[2] - z.detach()[2])]) / m
    assert torch.allclose(vq.embedding.weight.grad, expected)
    # commitment beta * mean((z - sg q)^2): d/dz = 2 beta (z - q) / (M * d)
    assert torch.allclose(z.grad, 2 * 0.25 * (z.detach() - q) / m)


def test_ema_mode_codebook_is_not_a_trained_parameter():
    vq = VectorQuantizer(dim=2, codebook_size=3, update="ema")
    assert not vq.embedding.weight.requires_grad
    out = vq.train()(torch.randn(5, 2, requires_grad=True))
    out.loss.backward()
    assert vq.embedding.weight.grad is None


# ------------------------------------------------------------------ EMA
def test_ema_update_matches_hand_computation():
    vq = VectorQuantizer(dim=2, codebook_size=3, update="ema", decay=0.9).train()
    set_codebook(vq, [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 0.0], [11.0, 2.0]])
    out = vq(z)
    assert out.codes.tolist() == [0, 0, 1, 1]
    # code 0: mean (0.5, 0.5) -> 0.9 * (0, 0) + 0.1 * (0.5, 0.5); code 1: mean (10, 1) -> (10, 0.1)
    # code 2 received nothing and keeps its vector exactly
    expected = torch.tensor([[0.05, 0.05], [10.0, 0.1], [0.0, 10.0]])
    assert torch.allclose(vq.embedding.weight, expected, atol=1e-6)
    assert out.loss.item() == pytest.approx(0.25 * ((z - torch.tensor([[0.0, 0], [0, 0], [10, 0], [10, 0]])) ** 2).mean().item())


def test_cosine_ema_update_renormalises_means_and_codes():
    vq = VectorQuantizer(dim=2, codebook_size=3, update="ema", decay=0.9, l2_normalize=True).train()
    set_codebook(vq, [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    z = torch.tensor([[3.0, 1.0], [2.0, 0.0], [0.1, 5.0]])
    out = vq(z)
    assert out.codes.tolist() == [0, 0, 1]
    n = [(3 / math.sqrt(10), 1 / math.sqrt(10)), (1.0, 0.0), (0.1 / math.sqrt(25.01), 5 / math.sqrt(25.01))]

    def unit(v):
        s = math.sqrt(v[0] ** 2 + v[1] ** 2)
        return (v[0] / s, v[1] / s)

    mean0 = unit(((n[0][0] + n[1][0]) / 2, (n[0][1] + n[1][1]) / 2))
    code0 = unit((0.9 * 1.0 + 0.1 * mean0[0], 0.9 * 0.0 + 0.1 * mean0[1]))
    code1 = unit((0.9 * 0.0 + 0.1 * n[2][0], 0.9 * 1.0 + 0.1 * n[2][1]))
    expected = torch.tensor([code0, code1, (-1.0, 0.0)])
    assert torch.allclose(vq.embedding.weight, expected, atol=1e-6)
    # the output lives on the unit sphere
    assert torch.allclose(out.quantized.norm(dim=-1), torch.ones(3), atol=1e-6)


# ------------------------------------------------------------------ init / restart / usage
def clustered(centres, per=50, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor(centres, dtype=torch.float32)
    return (centres.repeat_interleave(per, 0) + noise * torch.randn(len(centres) * per, centres.shape[1], generator=g))


def test_kmeans_init_finds_the_cluster_centres_on_the_first_batch():
    torch.manual_seed(0)
    centres = [[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]]
    x = clustered(centres)
    vq = VectorQuantizer(dim=2, codebook_size=4, kmeans_init=True, update="ema").train()
    assert not bool(vq.initialized)
    out = vq(x[torch.randperm(len(x))])
    assert bool(vq.initialized)
    distance = torch.cdist(torch.tensor(centres), vq.embedding.weight.detach())  # (centre, code)
    assert distance.min(dim=1).values.max() < 0.05  # every centre has a code on it
    assert sorted(distance.argmin(dim=1).tolist()) == [0, 1, 2, 3]  # ... and a different one each
    assert out.stats["usage"].item() == 1.0 and out.stats["perplexity"].item() == pytest.approx(4.0, rel=1e-4)
    # eval mode never initialises
    fresh = VectorQuantizer(dim=2, codebook_size=4, kmeans_init=True).eval()
    before = fresh.embedding.weight.clone()
    fresh(x)
    assert torch.equal(fresh.embedding.weight, before) and not bool(fresh.initialized)


def test_kmeans_cosine_returns_unit_centres():
    x = F.normalize(clustered([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], noise=0.02), dim=1)
    centres, counts = kmeans(x, 3, iters=5, cosine=True, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(centres.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.allclose(centres.abs().max(dim=1).values, torch.ones(3), atol=0.01)
    assert counts.tolist() == [50.0, 50.0, 50.0]


def test_dead_codes_are_restarted_from_recent_inputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=2, codebook_size=4, update="ema", restart_after=2, usage_window=1).train()
    set_codebook(vq, [[0.0, 0.0], [100.0, 100.0], [-100.0, 100.0], [100.0, -100.0]])
    x = torch.randn(16, 2)  # every vector is nearest to code 0
    first = vq(x)
    assert first.stats["restarted"].item() == 0 and first.stats["usage"].item() == 0.25
    second = vq(x)  # codes 1-3 now unused for 2 steps -> re-seeded from this batch
    assert second.stats["restarted"].item() == 3
    for row in vq.embedding.weight[1:]:
        assert (x == row).all(dim=1).any(), "a restarted code must be one of the recent inputs"
    assert vq.last_reset[1:].tolist() == [2, 2, 2]
    third = vq(x)
    assert third.stats["usage"].item() > 0.25  # the re-seeded codes now win some vectors


def test_without_restart_dead_codes_stay_dead():
    vq = VectorQuantizer(dim=2, codebook_size=4, update="ema", restart_after=0).train()
    set_codebook(vq, [[0.0, 0.0], [100.0, 100.0], [-100.0, 100.0], [100.0, -100.0]])
    x = torch.randn(16, 2)
    for _ in range(4):
        out = vq(x)
    assert out.stats["restarted"].item() == 0 and out.stats["usage"].item() == 0.25
    assert vq.embedding.weight[1:].abs().min() == 100.0


def test_usage_window_and_perplexity():
    assert code_perplexity(torch.tensor([5, 5, 0, 0])).item() == pytest.approx(2.0)
    assert code_perplexity(torch.tensor([7, 0, 0])).item() == pytest.approx(1.0)
    vq = VectorQuantizer(dim=1, codebook_size=4, usage_window=2).train()
    set_codebook(vq, [[0.0], [1.0], [2.0], [3.0]])
    assert vq(torch.tensor([[0.0], [1.0]])).stats["usage"].item() == 0.5
    assert vq(torch.tensor([[2.0]])).stats["usage"].item() == 0.75  # codes 0, 1 (last step) and 2
    assert vq(torch.tensor([[2.0]])).stats["usage"].item() == 0.25  # window of 2: code 2 only
    assert vq.eval()(torch.tensor([[0.0], [3.0]])).stats["usage"].item() == 0.5  # eval: this batch


def test_projection_to_a_low_dimensional_code_space():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=6, code_dim=2, l2_normalize=True).train()
    z = torch.randn(3, 5, 8)
    out = vq(z)
    assert out.quantized.shape == (3, 5, 8) and out.codes.shape == (3, 5)
    assert vq.embedding.weight.shape == (6, 2)
    assert torch.equal(vq.encode(z), out.codes)
    assert torch.allclose(vq.decode(out.codes), out.quantized, atol=1e-6)


# ------------------------------------------------------------------ distributed (2 gloo processes)
def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # (a) different seeds -> different initial codebooks; k-means init + restarts must be broadcast
        torch.manual_seed(100 + rank)
        vq = VectorQuantizer(dim=3, codebook_size=8, update="ema", decay=0.8, kmeans_init=True, restart_after=1).train()
        g = torch.Generator().manual_seed(rank)
        for _ in range(4):
            vq(torch.randn(20, 3, generator=g) + 3 * rank)
        # (b) same init on both ranks, EMA only: the update must use the all-reduced statistics
        ema = VectorQuantizer(dim=3, codebook_size=4, update="ema", decay=0.5).train()
        with torch.no_grad():
            ema.embedding.weight.copy_(torch.eye(4, 3) * 2)
        ema(torch.randn(10, 3, generator=torch.Generator().manual_seed(10 + rank)))
        torch.save({"kmeans": vq.embedding.weight.detach(), "restarted": vq.last_reset.clone(),
                    "ema": ema.embedding.weight.detach()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_end_with_identical_codebooks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["kmeans"], r1["kmeans"])
    assert r0["restarted"].max() > 1  # restarts happened after the init, and still agree
    assert torch.equal(r0["ema"], r1["ema"])
    # the EMA step equals a single process seeing both ranks' vectors
    single = VectorQuantizer(dim=3, codebook_size=4, update="ema", decay=0.5).train()
    with torch.no_grad():
        single.embedding.weight.copy_(torch.eye(4, 3) * 2)
    both = torch.cat([torch.randn(10, 3, generator=torch.Generator().manual_seed(10 + r)) for r in (0, 1)])
    single(both)
    assert torch.allclose(r0["ema"], single.embedding.weight, atol=1e-6)
