"""The `mimkit repro` framework: reports (markdown, results.json, PNG plots, verdicts) written whole
or not at all, runs trained once and reused only for the same config, and the CLI."""
import json
import shutil

import pytest
from PIL import Image

from mimkit.cli import main
from mimkit.repro import ReproContext, Report
from mimkit.repro.context import REQUEST_FILE, code_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


def small_report(quick=False):
    report = Report("Title", name="demo", quick=quick)
    report.text("Setup line.")
    report.table(["a", "b"], [[1, 2.5]], caption="A table:")
    report.plot("curve.png", {"x": ([1, 2, 3], [3.0, 1.0, 2.0])}, xlabel="steps", ylabel="FID")
    report.plot("bars.png", {"acc": (["random", "block"], [70.0, 60.0])}, xlabel="k", ylabel="%", kind="bar")
    report.claim("more is better", paper="p says yes", ours="we measured 3 > 2", reproduced=True)
    report.claim("less is worse", paper="p2", ours="1 vs 1", reproduced=False)
    report.claim("unclear", paper="p3", ours="n/a", reproduced=None)
    report.results["numbers"] = [1, 2]
    return report


def test_report_writes_markdown_results_and_valid_pngs(tmp_path):
    path = small_report().write(tmp_path / "out")
    text = path.read_text()
    assert "| more is better | p says yes | we measured 3 > 2 | **reproduced** |" in text
    assert "**not reproduced**" in text and "**inconclusive**" in text
    assert "| a | b |\n|---|---|\n| 1 | 2.5 |" in text and "![" in text and "(curve.png)" in text
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [c["verdict"] for c in payload["claims"]] == ["reproduced", "not reproduced", "inconclusive"]
    assert payload["results"]["numbers"] == [1, 2] and payload["quick"] is False
    for name in ("curve.png", "bars.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_quick_reports_say_their_verdicts_are_not_evidence(tmp_path):
    text = small_report(quick=True).write(tmp_path / "q").read_text()
    assert "--quick" in text and "not evidence" in text


def test_a_failing_report_leaves_the_old_one_untouched(tmp_path):
    out = tmp_path / "out"
    small_report().write(out)
    before = (out / "report.md").read_text()
    broken = small_report()
    broken.plot("bad.png", {"x": ([1, 2], [1.0])}, xlabel="x", ylabel="y")  # xs and ys differ in length
    with pytest.raises(ValueError):
        broken.write(out)
    assert (out / "report.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_runs_are_reused_for_the_same_config_and_retrained_otherwise(tmp_path, capsys):
    ctx = ReproContext(name="demo", out=tmp_path / "report", work=tmp_path / "work", progress=False)
    overrides = ["train.steps=2", "train.batch_size=8", "data.name=digits", "data.image_size=8", "model.img_size=8",
                 "model.patch_size=2", "data.limit=64", "data.crop_scale=[1.0,1.0]",
                 "train.ckpt_every=1", "train.log_every=1"]
    run = ctx.train("mae_micro_fmnist", overrides, "r")
    assert run == tmp_path / "work" / "demo" / "r" and (run / REQUEST_FILE).is_file()
    stamp = (run / "checkpoints" / "step_00000002" / "model.safetensors").stat().st_mtime_ns
    assert ctx.train("mae_micro_fmnist", overrides, "r") == run
    assert "reusing" in capsys.readouterr().out
    assert (run / "checkpoints" / "step_00000002" / "model.safetensors").stat().st_mtime_ns == stamp
    shutil.rmtree(run / "checkpoints" / "step_00000002")  # as if killed before the last checkpoint
    ctx.train("mae_micro_fmnist", overrides, "r")
    assert "resuming" in capsys.readouterr().out and (run / "checkpoints" / "step_00000002").is_dir()
    ctx.train("mae_micro_fmnist", [*overrides, "model.mask_ratio=0.5"], "r")  # another config: trained again
    assert "training" in capsys.readouterr().out
    assert json.loads((run / REQUEST_FILE).read_text())["model"]["mask_ratio"] == 0.5
    # the same config made by other code (a request recorded with another code fingerprint): trained again
    request = json.loads((run / REQUEST_FILE).read_text())
    assert request["code"] == code_fingerprint()
    (run / REQUEST_FILE).write_text(json.dumps({**request, "code": "0" * 64}))
    ctx.train("mae_micro_fmnist", [*overrides, "model.mask_ratio=0.5"], "r")
    assert "training" in capsys.readouterr().out



def test_cli_lists_the_reproductions_and_refuses_unknown_names(capsys):
    assert main(["repro", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("mae-mask-ratio", "maskgit-schedules", "mage-variable-ratio", "beitv2-tokenizer", "revcol-memory"):
        assert name in listed
    assert main(["repro", "no-such-repro"]) == 2
    err = capsys.readouterr().err
    assert "unknown reproduction 'no-such-repro'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:  # a usage error of argparse's, on parsing
        main(["repro", "revcol-memory", "--quick", "--threads", "-1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --threads: expected an integer in [0, 1024]" in err
    assert len(err.strip().splitlines()) == 1
