"""The command line end to end on scikit-learn's digits, and its one-line errors."""
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
    assert main(["eval", "probes", str(run), "--limit", "300"]) == 0
    table = capsys.readouterr().out
    assert "pretrained" in table and "random init" in table


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
