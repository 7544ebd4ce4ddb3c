"""`mimkit repro maskgit-schedules --quick` and `mage-variable-ratio --quick` end to end in one work
folder (the shared VQGAN, token cache and classifier are made by the first and reused by the
second), verdicts recomputed from results.json, and the token cache reuse rule."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

from mimkit.data import InMemoryDataset
from mimkit.nn.mask_schedules import SCHEDULES
from mimkit.repro import ReproContext, run_repro
from mimkit.repro import mage_variable_ratio as mage
from mimkit.repro import maskgit_schedules as mg
from mimkit.repro.context import REQUEST_FILE
from mimkit.repro.token_prerequisites import cache_is_current, cache_request, ensure_token_cache
from mimkit.tokenizers import build_token_cache


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("repro_token")


@pytest.fixture(scope="module")
def maskgit_report(root, one_thread):
    return run_repro("maskgit-schedules", out=root / "maskgit", work=root / "work", quick=True, progress=False)


@pytest.fixture(scope="module")
def mage_report(root, maskgit_report):  # after maskgit: it must reuse the prerequisites
    return run_repro("mage-variable-ratio", out=root / "mage", work=root / "work", quick=True, progress=False)


def payload(report):
    return json.loads((report.parent / "results.json").read_text())


def assert_pngs(folder, names):
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


# ---------------------------------------------------------------- maskgit-schedules
def test_maskgit_quick_report_measures_every_schedule_and_step(maskgit_report):
    data = payload(maskgit_report)
    rows, sizes = data["results"]["rows"], data["results"]["sizes"]
    assert [(r["schedule"], r["steps"]) for r in rows if r["steps"] == 1] == [(mg.ALL, 1)]  # T = 1 once
    for schedule in SCHEDULES:
        measured = sorted(r["steps"] for r in rows if r["schedule"] == schedule)
        assert measured == sorted({*sizes["decode_steps"], *sizes["extra_steps"].get(schedule, [])} - {1})
    assert all(r["fid"] >= 0 and 0 <= r["precision"] <= 1 for r in rows)
    assert_pngs(maskgit_report.parent, ["fid_vs_steps.png", "fid_by_schedule.png"])
    text = maskgit_report.read_text()
    assert "mimkit repro maskgit-schedules --quick" in text and "100 samples" in text


def test_maskgit_shapes_are_the_hand_computed_concavity(maskgit_report):
    # gamma(0.5): cosine 0.71, square 0.75, cubic 0.88, exp 1 - 64^-0.5 = 0.88; sqrt 0.29, log 1/6
    assert payload(maskgit_report)["results"]["shapes"] == {
        "cosine": "concave", "linear": "linear", "square": "concave", "cubic": "concave", "sqrt": "convex",
        "log": "convex", "exp": "concave"}


def maskgit_rules(rows, sweet, shapes):
    """The verdict rules of maskgit_schedules, written out again from the module's docstrings."""
    one = next(r["fid"] for r in rows if r["steps"] == 1)
    fid = {(r["schedule"], r["steps"]): r["fid"] for r in rows}
    cosine = {1: one, **{t: f for (s, t), f in fid.items() if s == "cosine"}}
    mean = {s: sum(fid[s, t] for t in sweet) / len(sweet) for s in SCHEDULES}
    best_other = min(v for s, v in mean.items() if s != "cosine")
    group = {g: [mean[s] for s in SCHEDULES if shapes[s] == g] for g in ("concave", "linear", "convex")}
    concave, linear, convex = (sum(v) / len(v) for v in group.values())
    m = mg.MARGIN
    gaps = [linear - concave, convex - linear]
    if any(g < -m for g in gaps):
        concavity = False
    else:
        concavity = True if all(g > m for g in gaps) else None
    last, best = cosine[max(cosine)], min(cosine[t] for t in sweet)
    return {"iterative": best < mg.ONE_STEP_RATIO * one,
            "cosine_best": True if mean["cosine"] <= best_other else (None if mean["cosine"] <= best_other + m
                                                                     else False),
            "concavity": concavity,
            "sweet_spot": True if last - best > m else (False if best - last > m else None)}


def test_maskgit_verdicts_follow_the_rule_on_the_measured_numbers(maskgit_report):
    data = payload(maskgit_report)
    results = data["results"]
    expected = maskgit_rules(results["rows"], results["sizes"]["sweet"], results["shapes"])
    assert [c["reproduced"] for c in data["claims"]] == [expected[k] for k in ("iterative", "cosine_best",
                                                                               "concavity", "sweet_spot")]


def test_maskgit_verdict_rule_on_hand_made_numbers():
    m = mg.MARGIN  # the numbers are placed a few margins apart, or well within one
    base = {"cosine": 8.0, "square": 8 + 0.2 * m, "cubic": 8 + 0.3 * m, "exp": 8 + 0.5 * m, "linear": 8 + 2 * m,
            "sqrt": 8 + 4 * m, "log": 8 + 5 * m}

    def rows(fids, cosine16):
        out = [{"schedule": mg.ALL, "steps": 1, "fid": 30.0}]
        out += [{"schedule": s, "steps": t, "fid": f + (t == 12) * 0.1 * m} for s, f in fids.items() for t in (8, 12)]
        return out + [{"schedule": "cosine", "steps": 16, "fid": cosine16}]

    assert mg.verdicts(rows(base, 8 + 2 * m), (8, 12), 64) == dict.fromkeys(
        ("iterative", "cosine_best", "concavity", "sweet_spot"), True)
    # square ahead of cosine by a tenth of a margin; convex level with linear; 16 steps clearly better
    flat = {**base, "square": 8 - 0.1 * m, "sqrt": 8 + 2.1 * m, "log": 8 + 2 * m}
    assert mg.verdicts(rows(flat, 8 - 2 * m), (8, 12), 64) == {"iterative": True, "cosine_best": None,
                                                               "concavity": None, "sweet_spot": False}
    bad = {s: 20.0 for s in base} | {"cosine": 24.0, "sqrt": 15.0}  # assumes MARGIN < 2.5
    assert mg.verdicts(rows(bad, 24.05), (8, 12), 64) == {"iterative": False, "cosine_best": False,
                                                          "concavity": False, "sweet_spot": None}


# ---------------------------------------------------------------- mage-variable-ratio
def test_mage_quick_report_reuses_the_prerequisites_and_has_every_setting(maskgit_report, mage_report):
    data = payload(mage_report)
    results = data["results"]
    assert all(stage["reused"] for stage in results["stages"].values())
    made = payload(maskgit_report)["results"]["stages"]  # the first run made them: their making time carries over
    for stage, info in results["stages"].items():
        assert 0 < info["made_minutes"] <= made[stage]["minutes"] + 0.01
    assert "3 run(s) were reused" in mage_report.read_text()  # tokenizer, token cache, classifier
    assert [r["setting"] for r in results["runs"]] == [s for s, _, _ in mage.SETTINGS]
    ratios = {r["setting"]: r["average_ratio"] for r in results["runs"]}
    assert ratios["fixed 0.55"] == 0.55 and ratios["fixed 0.75"] == 0.75
    # mean of N(0.55, 0.25) truncated to [0.5, 1]: 0.55 + 0.25 (phi(-0.2) - phi(1.8)) / (Phi(1.8) - Phi(-0.2)) = 0.694
    assert ratios["variable"] == pytest.approx(0.694, abs=0.01)
    assert_pngs(mage_report.parent, ["fid_by_setting.png", "probe_by_setting.png", "probe_vs_fid.png"])
    assert "mimkit repro mage-variable-ratio --quick" in mage_report.read_text()


def test_mage_verdicts_follow_the_rule_on_the_measured_numbers(mage_report):
    data = payload(mage_report)
    runs, random_linear = data["results"]["runs"], data["results"]["random_init"]["linear"]
    variable = runs[0]

    def three(gap, margin):
        return True if gap > margin else False if gap < -margin else None

    expected = []
    for fixed in runs[1:]:  # per fixed setting: generation, then representation
        expected += [three(fixed["fid"] - variable["fid"], mage.FID_MARGIN),
                     three(variable["linear"] - fixed["linear"], mage.PROBE_MARGIN)]
    expected.append(variable["linear"] > random_linear + mage.PROBE_MARGIN)
    assert [c["reproduced"] for c in data["claims"]] == expected


def test_mage_verdict_rule_on_hand_made_numbers():
    def run(setting, fid, linear):
        return {"setting": setting, "fid": fid, "linear": linear}

    fm, pm = mage.FID_MARGIN, mage.PROBE_MARGIN
    runs = [run("variable", 20.0, 75.0), run("fixed 0.55", 20 + 3 * fm, 75 - 2 * pm),
            run("fixed 0.75", 20 + 0.5 * fm, 75 + 0.5 * pm)]
    assert mage.verdicts(runs, 75 - 2 * pm) == {
        "generation vs fixed 0.55": True, "representation vs fixed 0.55": True,
        "generation vs fixed 0.75": None, "representation vs fixed 0.75": None, "pretraining": True}
    runs = [run("variable", 30.0, 70.0), run("fixed 0.55", 30 - 1.5 * fm, 70 + 1.5 * pm)]
    assert mage.verdicts(runs, 70 - 0.5 * pm) == {"generation vs fixed 0.55": False,
                                                  "representation vs fixed 0.55": False, "pretraining": False}


# ---------------------------------------------------------------- the token cache reuse rule
class CornerTokenizer(nn.Module):
    """8x8 grey images -> 2x2 codes in 0..3 (the top-left pixel of each 4x4 cell, quantised)."""

    def __init__(self, scale: float = 3.999):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale))
        self.codebook_size, self.grid_size = 4, (2, 2)

    def encode(self, images):
        return (images[:, 0, ::4, ::4] * self.scale).long().clamp(0, 3)


def test_cache_is_current_only_for_the_same_request_and_a_whole_cache(tmp_path):
    tokenizer = CornerTokenizer()
    data = InMemoryDataset(torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), torch.arange(6) % 2)
    cache = build_token_cache(tokenizer, data, tmp_path / "c", views=("identity",), progress=False)
    request = cache_request(tokenizer, ("identity",), 6)
    assert not cache_is_current(cache, request)  # no request file yet
    (cache / REQUEST_FILE).write_text(json.dumps(request))
    assert cache_is_current(cache, request)
    assert not cache_is_current(cache, cache_request(tokenizer, ("identity", "hflip"), 6))
    assert not cache_is_current(cache, cache_request(tokenizer, ("identity",), 0))
    other = cache_request(CornerTokenizer(scale=2.0), ("identity",), 6)
    assert other["tokenizer_fingerprint"] != request["tokenizer_fingerprint"]
    (cache / REQUEST_FILE).write_text(json.dumps(other))
    assert not cache_is_current(cache, other)  # the request matches, but the cache holds another tokenizer's codes
    (cache / REQUEST_FILE).write_text(json.dumps(request))
    codes = cache / "codes.npy"
    codes.write_bytes(codes.read_bytes()[:-4])  # truncated
    assert not cache_is_current(cache, request)
    (cache / REQUEST_FILE).write_text("{not json")
    assert not cache_is_current(cache, request)


def test_ensure_token_cache_builds_once_then_reuses_and_rebuilds_on_a_new_request(root, maskgit_report, tmp_path):
    ctx = ReproContext(name="t", out=tmp_path / "out", work=tmp_path, quick=True, progress=False)
    tokenizer = root / "work" / "shared" / "vqgan_tokens"
    first, stage = ensure_token_cache(ctx, tokenizer, ("identity",), 64)
    assert not stage["reused"] and first.parent == tmp_path / "shared" and first.name.startswith("tokens_")
    again, stage = ensure_token_cache(ctx, tokenizer, ("identity",), 64)
    assert again == first and stage["reused"]
    other, stage = ensure_token_cache(ctx, tokenizer, ("identity",), 32)  # same folder, other request: rebuilt
    assert other == first and not stage["reused"]
    assert json.loads((first / "manifest.json").read_text())["num_images"] == 32
