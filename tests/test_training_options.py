"""The Trainer options no other test exercises (issue 16), on a tiny MAE on the CPU:
train.precision=bf16 runs the forward under bf16 autocast (linears give bfloat16) while the
weights and the optimizer stay float32; train.compile=true hands the model to torch.compile and
trains through the compiled module (backend swapped to aot_eager here: dynamo tracing and AOT
autograd without inductor's ~30 s of C++ builds), with the same losses as eager and a checkpoint
that loads; optim.clip_grad=c leaves the optimizer a global gradient norm <= c while logging the
norm before clipping."""
import csv
import math

import pytest
import torch

from mimkit.config import load_config
from mimkit.data import InMemoryDataset
from mimkit.engine.trainer import Trainer
from mimkit.registry import build_model, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.img_size=8", "model.patch_size=2", "model.in_chans=1", "data.image_size=8", "train.batch_size=8",
        "train.log_every=1", "train.progress=false", "train.ckpt_every=0", "optim.blr=1e-2"]


def tiny_trainer(tmp_path, *overrides: str, steps: int = 3) -> Trainer:
    """A Trainer of mae_micro_fmnist at 8 px on 64 random grey images, seeded."""
    config = load_config("mae_micro_fmnist", TINY + [f"train.steps={steps}", f"train.out_dir={tmp_path}",
                                                     *overrides])
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model(config.method, config.model)
    return Trainer(model, config, InMemoryDataset(images, torch.zeros(64, dtype=torch.long)))


def logged(run_dir, column: str) -> list[float]:
    with open(run_dir / "log.csv") as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


def norm_seen_by_optimizer(trainer: Trainer) -> list[float]:
    """Global L2 norm of the gradients at every optimizer.step(), recorded by a step pre-hook."""
    norms = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(hook)
    return norms


def test_bf16_autocasts_the_forward_and_keeps_float32_weights(tmp_path):
    seen = {}
    for precision in ("fp32", "bf16"):
        trainer = tiny_trainer(tmp_path / precision, f"train.precision={precision}")
        dtypes = []
        trainer.model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.fit()
        assert len(dtypes) == 3  # one forward per step
        seen[precision] = set(dtypes)
        losses = logged(tmp_path / precision, "loss")
        assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
        params = list(trainer.model.parameters())
        assert all(p.dtype == torch.float32 for p in params)  # autocast casts copies, not the weights
        assert any(not torch.equal(a, p) for a, p in zip(before, params))  # and they were trained
        states = [s for s in trainer.optimizer.state.values() if "exp_avg" in s]
        assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}


def test_compile_trains_through_torch_compile_with_eager_losses(tmp_path, monkeypatch):
    eager = tiny_trainer(tmp_path / "eager")
    eager.fit()
    calls, graph_runs = [], []
    real_compile = torch.compile
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def counting_backend(graph, example_inputs):  # aot_eager, counting every run of a compiled graph
        run = aot_eager(graph, example_inputs)

        def counted(*args):
            graph_runs.append(1)
            return run(*args)
        return counted

    def spy(module, **kwargs):
        calls.append(module)
        return real_compile(module, backend=counting_backend)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    compiled = tiny_trainer(tmp_path / "compiled", "train.compile=true")
    assert calls == [compiled.model]  # the config reached torch.compile, with the model itself
    compiled.fit()
    assert len(graph_runs) >= 3  # every training forward ran compiled graphs
    assert logged(tmp_path / "compiled", "loss") == pytest.approx(logged(tmp_path / "eager", "loss"), rel=1e-4)
    model, _ = load_model(tmp_path / "compiled")  # saved under the model's own names, not _orig_mod.*
    for (name, a), (_, b) in zip(model.state_dict().items(), compiled.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_clip_grad_bounds_the_norm_the_optimizer_sees(tmp_path):
    free = tiny_trainer(tmp_path / "free")
    free_norms = norm_seen_by_optimizer(free)
    free.fit()
    clip = min(free_norms) / 4  # well below every unclipped norm, so clipping acts at every step
    clipped = tiny_trainer(tmp_path / "clipped", f"optim.clip_grad={clip}")
    norms = norm_seen_by_optimizer(clipped)
    clipped.fit()
    assert len(norms) == 3
    assert all(n <= clip * (1 + 1e-5) for n in norms), (norms, clip)
    assert all(n == pytest.approx(clip, rel=1e-4) for n in norms)  # scaled down to the bound, not zeroed
    logged_norms = logged(tmp_path / "clipped", "grad_norm")  # the norm before clipping
    assert logged_norms[0] == pytest.approx(free_norms[0], rel=1e-4)  # same seed: the first step is the same
    assert all(n > clip for n in logged_norms)
    assert "grad_norm" not in open(tmp_path / "free" / "log.csv").readline()  # logged only when clipping
