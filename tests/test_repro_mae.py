"""`mimkit repro mae-mask-ratio --quick`: the whole sweep end to end on Fashion-MNIST (tiny sizes),
with verdicts that follow from the numbers in results.json."""
import json

import pytest
from PIL import Image

from mimkit.repro import run_repro
from mimkit.repro.mae_mask_ratio import MARGIN, QUICK, settings, verdicts


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro_mae")
    return run_repro("mae-mask-ratio", out=root / "report", work=root / "work", quick=True, progress=False)


def test_quick_sweep_writes_report_plots_and_one_run_per_setting(quick_report):
    folder = quick_report.parent
    payload = json.loads((folder / "results.json").read_text())
    runs = payload["results"]["runs"]
    assert [(r["mask_type"], r["mask_ratio"]) for r in runs] == settings(QUICK)
    for name in ("probe_vs_mask_ratio.png", "probe_by_masking.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
    text = quick_report.read_text()
    assert "mimkit repro mae-mask-ratio --quick" in text and text.count("**") >= 6


def test_verdicts_follow_the_rule_on_the_measured_numbers(quick_report):
    payload = json.loads((quick_report.parent / "results.json").read_text())
    runs = payload["results"]["runs"]
    linear = {(r["mask_type"], r["mask_ratio"]): r["linear_cls"] for r in runs}
    at75 = linear[("random", 0.75)]
    ratio_rule = all(at75 > acc + MARGIN for (kind, ratio), acc in linear.items() if kind == "random" and ratio < 0.75)
    above_rule = all(at75 > acc + MARGIN for (kind, ratio), acc in linear.items() if kind == "random" and ratio > 0.75)
    strategy_rule = all(at75 > acc + MARGIN for (kind, _), acc in linear.items() if kind != "random")
    claims = payload["claims"]
    assert [c["reproduced"] for c in claims[:3]] == [ratio_rule, above_rule, strategy_rule]
    assert verdicts(runs) == {"ratio": ratio_rule, "above": above_rule, "strategy": strategy_rule}


def test_verdict_rule_on_hand_made_numbers():
    def run(kind, ratio, acc):
        return {"mask_type": kind, "mask_ratio": ratio, "linear_cls": acc}

    good = [run("random", 0.25, 60.0), run("random", 0.75, 70.0), run("random", 0.9, 71.0), run("block", 0.75, 65.0)]
    assert verdicts(good) == {"ratio": True, "above": False, "strategy": True}
    close = [run("random", 0.5, 69.8), run("random", 0.75, 70.0), run("grid", 0.75, 70.2)]
    assert verdicts(close) == {"ratio": False, "above": False, "strategy": False}  # within MARGIN / worse: not reproduced
