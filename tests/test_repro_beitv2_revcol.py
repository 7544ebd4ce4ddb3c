"""`mimkit repro revcol-memory --quick` and `beitv2-tokenizer --quick` end to end (report files, valid
PNGs, verdicts recomputed from results.json), and their helpers on hand-made cases: the
saved-activation measure, the gradient comparison, BEiT v2's pixel target, the position-mean
teacher cosine."""
import json
import math

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from mimkit.errors import ConfigError
from mimkit.methods.beitv2 import BEiTv2, BEiTv2Config
from mimkit.nn import patchify
from mimkit.repro.reversible_memory import StackSize, build_stack, rng_state_bytes, saved_activations, stack_input
from mimkit.repro import beitv2_tokenizer as beit_repro
from mimkit.repro import revcol_memory
from mimkit.repro import run_repro
from mimkit.tokenizers.teacher import Teacher

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = StackSize(columns=2, levels=3, dim=16, heads=2, batch=2, tokens=5)


def pngs_open(folder, names):
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


# ------------------------------------------------------------------ the memory measure
def test_saved_activations_counts_each_saved_storage_once_and_skips_excluded_ones():
    a = torch.randn(10, requires_grad=True)
    w = torch.randn(10, requires_grad=True)  # stands for a parameter
    # a * w saves both (each for the other's gradient); the excluded w is not counted
    saved = saved_activations(lambda: (a * w).sum(), exclude=[w])
    assert saved.nbytes == 10 * 4 and saved.tensors == 2
    b = torch.randn(10, dtype=torch.float64)
    # a * b32 saves only the float32 copy of b (a's gradient needs it; b32 needs no gradient)
    assert saved_activations(lambda: (a * b.float()).sum()).nbytes == 10 * 4
    base = torch.randn(8)
    x = torch.randn(4, requires_grad=True)
    # two views of one storage, both saved: 8 floats once, not twice
    shared = saved_activations(lambda: (x * base[:4] + x * base[4:]).sum(), exclude=[x])
    assert shared.nbytes == 8 * 4 and shared.tensors == 2


def test_plain_saved_bytes_grow_linearly_in_columns_and_reversible_ones_are_the_boundary():
    plain = {}
    for columns in (1, 2, 3, 4):
        size = StackSize(**{**vars(TINY), "columns": columns})
        stack = build_stack(size, reversible=False)
        x = stack_input(size)
        plain[columns] = saved_activations(lambda: stack(x), exclude=stack.parameters()).nbytes
        stack.reversible = True
        rev = saved_activations(lambda: stack(x), exclude=stack.parameters())
        # x and the last column's 3 states, (2, 5, 16) float32 each, whatever the column count
        assert rev.nbytes == (1 + 3) * 2 * 5 * 16 * 4
        assert rng_state_bytes(stack) == columns * 3 * torch.get_rng_state().nbytes
    steps = [plain[c + 1] - plain[c] for c in (2, 3)]  # every column after the first saves the same
    assert steps[0] == steps[1] > 0
    assert 3.5 < plain[4] / plain[1] < 4.5
    assert rng_state_bytes(build_stack(TINY, reversible=False)) == 0


def test_gradient_check_is_exact_in_float64_and_relative_difference_by_hand():
    check = revcol_memory.gradient_check(TINY, torch.float64)
    assert check["outputs_equal"] and check["max_relative"] < 1e-10
    assert check["tensors"] == 1 + sum(1 for _ in build_stack(TINY, False).parameters())
    assert revcol_memory.relative_difference(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5])) == pytest.approx(0.1)
    assert revcol_memory.relative_difference(torch.zeros(2), torch.zeros(2)) == 0.0
    assert revcol_memory.relative_difference(torch.zeros(2), torch.ones(2)) == math.inf


def test_revcol_verdict_rules_on_hand_made_numbers():
    def stack(rev, plain):
        return ([{"columns": c, "reversible": True, "total_mib": v} for c, v in rev.items()]
                + [{"columns": c, "reversible": False, "total_mib": v} for c, v in plain.items()])

    grads = [{"float64": {"max_relative": 1e-9}}, {"float64": {"max_relative": 5e-7}}]
    good = {"stack": stack({2: 4.0, 8: 5.0}, {2: 10.0, 8: 31.0}), "gradients": grads,
            "model": stack({2: 1.0, 16: 1.2}, {2: 1.0, 16: 5.0})}
    assert revcol_memory.verdicts(good) == {"flat": True, "linear": True, "gradients": True, "model": True}
    bad = {"stack": stack({2: 4.0, 8: 5.3}, {2: 10.0, 8: 29.0}),
           "gradients": grads + [{"float64": {"max_relative": 2e-6}}],
           "model": stack({2: 1.0, 16: 1.4}, {2: 1.0, 16: 5.0})}
    assert revcol_memory.verdicts(bad) == {"flat": False, "linear": False, "gradients": False, "model": False}


@pytest.fixture(scope="module")
def revcol_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro_revcol")
    return run_repro("revcol-memory", out=root / "report", work=root / "work", quick=True, progress=False)


def test_revcol_quick_writes_report_plots_and_consistent_verdicts(revcol_report):
    folder = revcol_report.parent
    pngs_open(folder, ["memory_vs_columns.png", "gradient_error_vs_columns.png", "model_memory_vs_columns.png"])
    payload = json.loads((folder / "results.json").read_text())
    r = payload["results"]
    assert sorted({row["columns"] for row in r["stack"]}) == list(revcol_memory.QUICK["columns"])
    total = {(row["reversible"], row["columns"]): row["saved_mib"] + row.get("rng_mib", 0) for row in r["stack"]}
    flat = all(total[True, c] <= revcol_memory.MAX_REVERSIBLE_GROWTH * total[True, 2] for c in (2, 4, 8))
    linear = all(total[False, c] >= revcol_memory.MIN_LINEAR_FRACTION * c / 2 * total[False, 2] for c in (4, 8))
    grads = all(g["float64"]["max_relative"] <= revcol_memory.GRAD_TOLERANCE for g in r["gradients"])
    model = {(row["reversible"], row["columns"]): row["total_mib"] for row in r["model"]}
    model_flat = model[True, max(c for _, c in model)] <= revcol_memory.MAX_REVERSIBLE_GROWTH * model[True, 2]
    assert [c["reproduced"] for c in payload["claims"]] == [flat, linear, grads, model_flat]
    text = revcol_report.read_text()
    assert "mimkit repro revcol-memory --quick" in text and text.count("**") >= 8


# ------------------------------------------------------------------ BEiT v2's pixel target
VQKD = {"method": "vqkd", "model": {
    "img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2,
    "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "codebook_size": 12, "code_dim": 4}}


def tiny_beit(**kw) -> BEiTv2:
    torch.manual_seed(0)
    kw = {"tokenizer_config": VQKD, "img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 2,
          "num_heads": 2, "early_layers": 1, "head_layers": 1, "num_mask_patches": 6, "min_mask_patches": 4,
          "drop_path": 0.0, "pixel_mean": [0.3], "pixel_std": [0.4]} | kw
    return BEiTv2(BEiTv2Config(**kw))


def test_pixel_target_regresses_normalised_hidden_patches_with_both_heads():
    model = tiny_beit(target="pixels").eval()
    assert model.lm_head.out_features == 2 * 2 * 1
    images = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 1, 4, 5]] = True
    mask[1, [10, 11, 14, 15, 6, 7]] = True
    out = model(images, mask=mask, tokens=torch.zeros(2, 4, 4, dtype=torch.long))  # tokens are ignored
    patches = patchify((images - 0.3) / 0.4, 2)[mask]  # (10, 4): the hidden patches, normalised input
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    last, early = model.forward_encoder(images, mask, keep_early=True)
    pred_mim = model.lm_head(model.norm(last[:, 1:][mask]))
    pred_agg = model.lm_head(model.norm(model.forward_aggregation(last, early)[:, 1:][mask]))
    mse_mim, mse_agg = ((pred_mim - target) ** 2).mean(), ((pred_agg - target) ** 2).mean()
    assert out.loss.item() == pytest.approx((mse_mim + mse_agg).item(), rel=1e-5)
    assert out.logs["loss_mim"].item() == pytest.approx(mse_mim.item(), rel=1e-5)
    assert out.targets is None and torch.equal(out.mask, mask)
    assert model.features(images).shape == (2, 16)
    codes = tiny_beit()  # the default target is unchanged: the codebook-sized head
    assert codes.config.target == "codes" and codes.lm_head.out_features == 12
    with pytest.raises(ConfigError, match="model.target must be one of codes, pixels, got 'rgb'"):
        tiny_beit(target="rgb")


def test_position_mean_cosine_by_hand():
    # feature of patch l = position vector p_l times a per-image sign-free scale: the mean keeps
    # p_l's direction, so every test patch has cosine 1
    positions = torch.randn(4, 3)
    teacher = Teacher(lambda x: x.mean((1, 2, 3))[:, None, None].add(0.5) * positions, grid_size=(2, 2))
    images = [{"images": torch.rand(3, 1, 4, 4), "labels": torch.zeros(3)}]
    assert beit_repro.position_mean_cosine(teacher, Batches(images), Batches(images)) == pytest.approx(1.0)
    # 1-patch features of sign +-1 by image: the train mean (1 + 1 - 1) / 3 points to +, so the two
    # test images score cosine +1 and -1
    sign = Teacher(lambda x: torch.where(x.mean((1, 2, 3)) > 0.5, 1.0, -1.0)[:, None, None] * torch.ones(1, 1, 2))
    train = Batches([{"images": torch.stack([torch.full((1, 2, 2), 0.9), torch.full((1, 2, 2), 0.8),
                                             torch.full((1, 2, 2), 0.1)]), "labels": torch.zeros(3)}])
    test = Batches([{"images": torch.stack([torch.full((1, 2, 2), 0.9), torch.full((1, 2, 2), 0.1)]),
                     "labels": torch.zeros(2)}])
    assert beit_repro.position_mean_cosine(sign, train, test) == pytest.approx(0.0)


class Batches(Dataset):
    """A dataset made of ready batches (get_batch slices across them)."""

    def __init__(self, batches):
        self.images = torch.cat([b["images"] for b in batches])
        self.labels = torch.cat([b["labels"] for b in batches])

    def __len__(self):
        return len(self.images)

    def get_batch(self, indices):
        return {"images": self.images[indices], "labels": self.labels[indices]}


def test_beitv2_verdict_rules_on_hand_made_numbers():
    def results(usage, no_restart, cos, codes, pixels, random):
        probe = lambda v: {"linear_cls": v, "linear_mean": v}  # noqa: E731
        return {"tokenizers": {"restart": {"usage": usage, "teacher_cosine": cos},
                               "no_restart": {"usage": no_restart, "teacher_cosine": cos}},
                "position_mean_cosine": 0.8, "probes": {"codes": probe(codes), "pixels": probe(pixels),
                                                        "random_init": probe(random)}}

    assert beit_repro.verdicts(results(1.0, 0.5, 0.9, 70.0, 65.0, 60.0)) == {
        "usage": True, "restart": True, "cosine": True, "target": True, "pretraining": True}
    assert beit_repro.verdicts(results(0.94, 0.86, 0.81, 65.2, 65.0, 65.0)) == {
        "usage": False, "restart": False, "cosine": False, "target": False, "pretraining": False}


@pytest.fixture(scope="module")
def beit_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro_beit")
    return run_repro("beitv2-tokenizer", out=root / "report", work=root / "work", quick=True, progress=False)


def test_beitv2_quick_writes_report_plots_and_consistent_verdicts(beit_report):
    folder = beit_report.parent
    pngs_open(folder, ["codebook_usage.png", "probe_by_target.png"])
    payload = json.loads((folder / "results.json").read_text())
    r = payload["results"]
    toks, probes = r["tokenizers"], r["probes"]
    assert set(toks) == {"restart", "no_restart"} and set(probes) == {"codes", "pixels", "random_init", "teacher"}
    assert toks["no_restart"]["restart_after"] == 0 and toks["restart"]["restart_after"] > 0
    assert all(0 < t["usage"] <= 1 and 1 <= t["perplexity"] <= t["codebook_size"] for t in toks.values())
    assert (folder.parent / "work" / "shared" / "mae_teacher").is_dir()  # the teacher is a shared prerequisite
    key = "linear_" + beit_repro.PRIMARY_POOL
    expected = [toks["restart"]["usage"] >= beit_repro.USAGE_MIN,
                toks["restart"]["usage"] - toks["no_restart"]["usage"] >= beit_repro.RESTART_GAIN,
                toks["restart"]["teacher_cosine"] > r["position_mean_cosine"] + beit_repro.COSINE_GAIN,
                probes["codes"][key] > probes["pixels"][key] + beit_repro.MARGIN,
                probes["codes"][key] > probes["random_init"][key] + beit_repro.MARGIN]
    assert [c["reproduced"] for c in payload["claims"]] == expected
    text = beit_report.read_text()
    assert "mimkit repro beitv2-tokenizer --quick" in text and "model.target=pixels" in text
