"""The command line end to end on scikit-learn's digits, and its one-line errors."""
import re
import subprocess
import sys

import pytest
from PIL import Image

from mimkit.cli import main

TINY = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2", "train.batch_size=32",
        "train.steps=4", "train.progress=false", "train.picture_every=2"]


def test_train_reconstruct_eval_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    # overrides may come before and after the options
    assert main(["train", "mae_micro_fmnist", *TINY[:4], "--out", str(run), *TINY[4:]]) == 0
    assert (run / "checkpoints" / "step_00000004" / "model.safetensors").is_file()
    assert (run / "pictures" / "reconstruction_step_00000004.png").is_file()
    out = tmp_path / "grid.png"
    assert main(["reconstruct", str(run), "--n", "3", "--scale", "2", "--out", str(out)]) == 0
    picture = Image.open(out)
    # 3 rows x 3 columns of 16x16 cells with 2 px padding
    assert picture.size == (3 * 18 + 2, 3 * 18 + 2)
    capsys.readouterr()
    assert main(["eval", "probes", str(run), "--limit", "300", "--pool", "both"]) == 0
    train_line, test_line, title, header, rule, *rows = capsys.readouterr().out.splitlines()
    # the data lines: digits' own splits (1438 / 359 images), 300 of each drawn stratified over the 10 classes
    assert data_line(train_line, "train") == ("digits train", 300, 1438, 10)
    assert data_line(test_line, "test") == ("digits test", 300, 359, 10)
    assert title == "test top-1 (%), pretrained vs the same architecture at random init"
    assert cells(header) == ["method", "pool", "linear pretrained", "linear random", "linear gain",
                             "k-NN pretrained", "k-NN random", "k-NN gain"]
    assert set(rule) == {"-", "+"}
    rows = [cells(row) for row in rows]
    assert [row[:2] for row in rows] == [["mae", "cls"], ["mae", "mean"]]
    for row in rows:
        for pretrained, random_init, gain in (map(float, row[2:5]), map(float, row[5:8])):
            for top1 in (pretrained, random_init):
                # a share of the 300 test images: k / 3 %, printed to 2 decimals
                assert 0 <= top1 <= 100 and abs(top1 * 3 - round(top1 * 3)) < 0.02, row
                # chance is 10%: a probe that learnt nothing (or labels out of step with features) is near it;
                # even random-init features of digits give ~35% (k-NN) to ~65% (linear)
                assert top1 > 20, row
            assert gain == pytest.approx(pretrained - random_init, abs=0.015), row


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("|")]


def data_line(line: str, split: str) -> tuple[str, int, int, int]:
    """(source, images, images of the whole split, classes) of a `train data ...` / `test data ...` line,
    checking that the per-class counts add up to the images."""
    match = re.fullmatch(rf"{split} data +(.+): (\d+) images \(random subset of (\d+) of (\d+), seed 0, stratified "
                         rf"by class\), (\d+) classes \((.+)\)", line)
    assert match, line
    source, n, subset, total, classes, counts = match.groups()
    per_class = dict(pair.rsplit(" ", 1) for pair in counts.split(", "))
    assert int(subset) == int(n) == sum(map(int, per_class.values())) and len(per_class) == int(classes), line
    return source, int(n), int(total), int(classes)


@pytest.mark.parametrize("argv, message", [
    (["train", "mae_micro_fmnist", "optim.bl=1"], "unknown key 'optim.bl'; valid keys: blr"),
    (["train", "nope_preset"], "unknown preset 'nope_preset'"),
    (["reconstruct", "/nonexistent/run", "--out", "x.png"], "checkpoint /nonexistent/run does not exist"),
    (["train", "mae_micro_fmnist", "data.name=/nonexistent/images"], "/nonexistent/images"),
])
def test_user_errors_are_one_line_without_traceback(argv, message):
    proc = subprocess.run([sys.executable, "-m", "mimkit", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_options_after_overrides_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "mae_micro_fmnist", "--out", "x", "train.steps=1", "--bogus"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_presets_lists_paper_and_cpu_recipes(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ["mae_vit_base_patch16", "mae_vit_large_patch16", "mae_vit_huge_patch14", "mae_tiny_fmnist"]:
        assert name in out
