"""A user's own data (issue 14): the commands that read a checkpoint and data never test on the
training images, say what each split is, keep every class in a --limit subset, refuse unlabelled
data, mismatched colour and unreadable files in one line (or skip and count them), and a run
measures its pixel statistics on its own images.

One tiny RGB run on a class-sorted plain folder (4 classes of 16x16 PNGs, a coloured bar at a
class-dependent row over noise) is trained once per module; the other runs are trained where a
test needs one (a few steps of a 1-block model: about a second each)."""
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.cli import main
from mimkit.data.evaluation_data import EvalSources, eval_dataset, eval_splits
from mimkit.config import load_config
from mimkit.registry import load_model
from mimkit.presets import all_presets

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["a", "b", "c", "d"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 30, 10
SIZE = 16
TINY_MODEL = ["data.image_size=16", "model.img_size=16", "model.patch_size=4", "model.embed_dim=16", "model.depth=1",
              "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1",
              "model.decoder_num_heads=2", "train.batch_size=16", "train.steps=3", "train.progress=false",
              "train.picture_every=0", "train.threads=1"]


# ------------------------------------------------------------------------------ helpers

def class_image(rng: np.random.Generator, k: int) -> np.ndarray:
    """uint8 (16, 16, 3): noise with a bar of class k's colour at rows 4k..4k+2."""
    image = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    image[4 * k:4 * k + 3] = [200 + 10 * k, 50 * k, 255 - 40 * k]
    return image


def write_class_folder(root: Path, rng, per_class: int, classes=CLASSES, prefix: str = "") -> None:
    for k, name in enumerate(CLASSES):
        if name not in classes:
            continue
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(rng, k)).save(root / name / f"{prefix}{name}_{i:03d}.png")


def cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mimkit ARGV` in this process; argparse's SystemExit is a status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_info:
            status = exit_info.code
    return status, out.getvalue(), err.getvalue()


def error_line(status: int, stderr: str, *needles: str) -> str:
    """The one error line of a status-2 exit (progress bars erased with \\r before it are dropped)."""
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.split("\n") if line.strip()]
    assert len(lines) == 1, stderr
    line = lines[0].rsplit("\r", 1)[-1]
    assert line.startswith(("mimkit: error: ", "mimkit eval: error: ", "mimkit reconstruct: error: ")), line
    for needle in needles:
        assert needle in line, line
    return line


DATA_LINE = re.compile(r"^(train|test) data\s+(?P<source>.+?): (?P<n>\d+) images"
                       r"(?: \(random subset of (?P<sub>\d+) of (?P<total>\d+), seed (?P<seed>-?\d+)"
                       r"(?P<strat>, stratified by class)?\))?"
                       r"(?:, (?P<k>\d+) classes \((?P<counts>.*)\))?$")


def data_lines(stdout: str) -> dict[str, dict]:
    """{"train": {...}, "test": {...}} parsed from the `train data   ...` / `test data    ...` lines."""
    found = {}
    for line in stdout.splitlines():
        match = DATA_LINE.match(line)
        if match:
            info = match.groupdict()
            info["n"] = int(info["n"])
            info["counts"] = {name: int(count) for name, count in
                              (part.rsplit(" ", 1) for part in info["counts"].split(", "))} if info["counts"] else {}
            found[match.group(1)] = info
    return found


def table_row(stdout: str) -> list[str]:
    """Cells of the first result row (method mae) of an eval table."""
    rows = [line for line in stdout.splitlines() if line.startswith("mae ")]
    assert rows, stdout
    return [cell.strip() for cell in rows[0].split("|")]


def train_run(out: Path, *overrides: str) -> tuple[int, str, str]:
    return cli(["train", "mae_micro_fmnist", *TINY_MODEL, *overrides, "--out", out])


def config_json(run: Path) -> dict:
    return json.loads(next((run / "checkpoints").glob("step_*/config.json")).read_text())


def eval_args(**kwargs) -> EvalSources:
    return EvalSources(**kwargs)


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own_data")
    rng = np.random.default_rng(0)
    paths = {name: root / name for name in ["split", "plain", "flat", "val_bad", "val_bd", "val_unknown", "grey",
                                            "first_bad"]}
    write_class_folder(paths["split"] / "train", rng, TRAIN_PER_CLASS)
    write_class_folder(paths["split"] / "val", rng, VAL_PER_CLASS)
    paths["val"] = paths["split"] / "val"
    write_class_folder(paths["plain"], rng, TRAIN_PER_CLASS)  # class-sorted, no train/ val/ split
    paths["flat"].mkdir()
    for i in range(12):
        Image.fromarray(class_image(rng, i % 4)).save(paths["flat"] / f"{i:03d}.png")
    shutil.copytree(paths["val"], paths["val_bad"])
    paths["bad_file"] = paths["val_bad"] / "b" / "b_005.png"
    paths["bad_file"].write_bytes(b"this is not a png")
    for name in ("b", "d"):
        shutil.copytree(paths["val"] / name, paths["val_bd"] / name)
    shutil.copytree(paths["val"], paths["val_unknown"])
    shutil.copytree(paths["val"] / "a", paths["val_unknown"] / "zebra")
    for k, name in enumerate(CLASSES):  # stored grey (mode L), labelled
        (paths["grey"] / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(class_image(rng, k)[..., 0]).save(paths["grey"] / name / f"{i}.png")
    write_class_folder(paths["first_bad"], rng, 4)
    first = sorted(paths["first_bad"].rglob("*.png"))[0]
    first.write_bytes(b"garbage")  # the very first file a reader meets
    paths["first_bad_file"] = first

    def arrays(per_class, classes=range(4)):
        images = np.stack([class_image(rng, k) for k in classes for _ in range(per_class)])
        return images, np.repeat(np.asarray(list(classes)), per_class)

    x_train, y_train = arrays(TRAIN_PER_CLASS)
    x_test, y_test = arrays(VAL_PER_CLASS)
    paths["split_npz"] = root / "split.npz"
    np.savez(paths["split_npz"], x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    paths["split_unlabelled_npz"] = root / "split_unlabelled.npz"
    np.savez(paths["split_unlabelled_npz"], x_train=x_train, x_test=x_test)
    paths["plain_npz"] = root / "plain.npz"  # images only
    np.savez(paths["plain_npz"], images=x_train)
    paths["labelled_npz"] = root / "labelled.npz"  # images and labels, but one undivided set
    np.savez(paths["labelled_npz"], images=x_train, labels=y_train)
    x_two, y_two = arrays(6, classes=(0, 1))
    paths["two_class_train_npz"] = root / "two_class_train.npz"
    np.savez(paths["two_class_train_npz"], x=x_two, y=y_two)
    grey = np.clip(rng.normal(0.62, 0.1, (40, SIZE, SIZE)), 0, 1)  # Fashion-MNIST style: (N, H, W) grey floats
    paths["grey_npz"] = root / "grey.npz"
    np.savez(paths["grey_npz"], images=grey.astype(np.float32))
    return paths


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> dict:
    """The one tiny RGB run on the plain (class-sorted, unsplit) folder: its folder and what training printed."""
    out = tmp_path_factory.mktemp("own_run") / "run"
    status, stdout, stderr = train_run(out, f"data.name={data['plain']}", "model.in_chans=3")
    assert status == 0, stderr
    return {"dir": out, "stdout": stdout}


# ------------------------------------------------------------------------------ 1: never test on train images

def test_probes_without_test_data_are_refused_naming_test_data(run):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--threads", "1"])
    error_line(status, stderr, "no separate test split", "--test-data")
    assert "pretrained" not in stdout


def test_probes_with_a_test_folder_use_it_and_report_both_splits(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["val"], "--threads", "1"])
    assert status == 0, stderr
    splits = data_lines(stdout)
    assert splits["train"]["source"] == str(data["plain"]) and splits["train"]["n"] == 4 * TRAIN_PER_CLASS
    assert splits["test"]["source"] == str(data["val"]) and splits["test"]["n"] == 4 * VAL_PER_CLASS
    assert splits["train"]["counts"] == dict.fromkeys(CLASSES, TRAIN_PER_CLASS)
    assert splits["test"]["counts"] == dict.fromkeys(CLASSES, VAL_PER_CLASS)
    row = table_row(stdout)
    accuracy = float(row[2])  # linear pretrained, top-1 on 40 test images: a multiple of 2.5
    assert 0 <= accuracy <= 100 and (accuracy / 2.5) == pytest.approx(round(accuracy / 2.5), abs=1e-6)


@pytest.mark.parametrize("how", ["--test-data train folder", "--train-data X --test-data X (folder)",
                                 "--train-data X --test-data X (npz)", "test folder inside the train folder"])
def test_test_data_sharing_the_train_images_is_refused(run, data, how):
    argv = {
        "--test-data train folder": ["--test-data", data["plain"]],
        "--train-data X --test-data X (folder)": ["--train-data", data["val"], "--test-data", data["val"]],
        "--train-data X --test-data X (npz)": ["--train-data", data["labelled_npz"], "--test-data",
                                               data["labelled_npz"]],
        "test folder inside the train folder": ["--train-data", data["plain"], "--test-data", data["plain"] / "a"],
    }[how]
    status, stdout, stderr = cli(["eval", "probes", run["dir"], *argv, "--threads", "1"])
    line = error_line(status, stderr)
    assert "also train images" in line or "give test data of its own" in line, line
    assert "pretrained" not in stdout


@pytest.mark.parametrize("spelling", ["relative", "dotdot", "symlink", "npz dotdot"])
def test_train_images_reached_by_another_path_are_refused(run, data, spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(data["plain"].parent)
    if spelling == "symlink":
        (tmp_path / "link").symlink_to(data["plain"])
    argv = {
        "relative": ["--test-data", data["plain"].name],
        "dotdot": ["--test-data", f"{data['val']}/../../plain"],
        "symlink": ["--test-data", tmp_path / "link"],
        "npz dotdot": ["--train-data", data["labelled_npz"], "--test-data", f"{data['val']}/../../labelled.npz"],
    }[spelling]
    status, stdout, stderr = cli(["eval", "knn", run["dir"], *argv, "--limit", "8", "--threads", "1"])
    error_line(status, stderr)


def test_split_npz_is_split_and_plain_npz_has_no_test_split(run, data):
    status, stdout, stderr = cli(["eval", "knn", run["dir"], "--data", data["split_npz"], "--threads", "1"])
    assert status == 0, stderr
    splits = data_lines(stdout)
    assert (splits["train"]["source"], splits["train"]["n"]) == (f"{data['split_npz']} train", 4 * TRAIN_PER_CLASS)
    assert (splits["test"]["source"], splits["test"]["n"]) == (f"{data['split_npz']} test", 4 * VAL_PER_CLASS)
    for plain in ("plain_npz", "labelled_npz"):
        status, stdout, stderr = cli(["eval", "knn", run["dir"], "--data", data[plain], "--threads", "1"])
        error_line(status, stderr, str(data[plain]), "no separate test split", "--test-data")


def test_a_folder_with_train_and_val_is_split_by_them(run, data):
    status, stdout, stderr = cli(["eval", "knn", run["dir"], "--data", data["split"], "--threads", "1"])
    assert status == 0, stderr
    splits = data_lines(stdout)
    assert splits["train"]["source"] == str(data["split"] / "train")
    assert splits["test"]["source"] == str(data["val"])


def test_reconstruct_test_split_of_a_plain_folder_run_is_refused(run, tmp_path):
    out = tmp_path / "grid.png"
    status, stdout, stderr = cli(["reconstruct", run["dir"], "--split", "test", "--out", out, "--threads", "1"])
    error_line(status, stderr, "no separate test split", "--test-data")
    assert not out.exists()
    status, stdout, stderr = cli(["reconstruct", run["dir"], "--split", "train", "--n", "3", "--out", out,
                                  "--threads", "1"])
    assert status == 0, stderr
    assert out.is_file() and "wrote" in stdout and "3 rows" in stdout


def test_training_on_a_split_folder_reads_train_and_evaluation_reads_val(data, tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = train_run(out, f"data.name={data['split']}", "model.in_chans=3")
    assert status == 0, stderr
    assert f"pixel statistics of {data['split'] / 'train'} measured on {4 * TRAIN_PER_CLASS} images" in stdout
    status, stdout, stderr = cli(["eval", "knn", out, "--limit", "8", "--threads", "1"])  # the run's own data
    assert status == 0, stderr
    splits = data_lines(stdout)
    assert splits["train"]["source"] == str(data["split"] / "train") and splits["test"]["source"] == str(data["val"])


# ------------------------------------------------------------------------------ 2: --limit is stratified and seeded

def test_limit_on_a_class_sorted_folder_keeps_every_class(run, data):
    status, stdout, stderr = cli(["eval", "knn", run["dir"], "--test-data", data["val"], "--limit", "40",
                                  "--threads", "1"])
    assert status == 0, stderr
    train, test = data_lines(stdout)["train"], data_lines(stdout)["test"]
    assert train["counts"] == dict.fromkeys(CLASSES, 10)
    assert (train["n"], train["sub"], train["total"], train["seed"]) == (40, "40", "120", "0") and train["strat"]
    assert test["counts"] == dict.fromkeys(CLASSES, 10) and test["sub"] is None  # 40 of 40: all of it
    status, stdout, stderr = cli(["eval", "knn", run["dir"], "--data", data["split"], "--limit", "20",
                                  "--seed", "3", "--threads", "1"])
    assert status == 0, stderr
    for split in ("train", "test"):
        info = data_lines(stdout)[split]
        assert info["counts"] == dict.fromkeys(CLASSES, 5) and info["seed"] == "3", stdout


def test_limit_subset_is_seeded(run, data):
    _, config = load_model(run["dir"])

    def files(seed):
        return eval_dataset(config, "train", eval_args(data=str(data["split"]), limit=40, seed=seed)).files

    first, again, other = files(0), files(0), files(1)
    assert first == again
    assert first != other
    assert len(first) == len(other) == 40
    assert files(0) != sorted(str(f) for f in (data["split"] / "train").rglob("*.png"))[:40]  # not the first 40
    # the command is reproducible end to end
    argv = ["eval", "knn", run["dir"], "--data", data["split"], "--limit", "20", "--seed", "5", "--threads", "1"]
    assert cli(argv)[1] == cli(argv)[1]


# ------------------------------------------------------------------------------ 4: unreadable files

def test_eval_on_an_unreadable_test_file_stops_naming_it_or_skips_and_counts(run, data):
    argv = ["eval", "probes", run["dir"], "--test-data", data["val_bad"], "--threads", "1"]
    status, stdout, stderr = cli(argv)
    error_line(status, stderr, str(data["bad_file"]), "--on-error skip")
    status, stdout, stderr = cli([*argv, "--on-error", "skip"])
    assert status == 0, stderr
    assert f"skipped 1 unreadable image file(s) (--on-error skip), e.g. {data['bad_file']}" in stdout
    row = table_row(stdout)
    assert float(row[2]) * 39 / 100 == pytest.approx(round(float(row[2]) * 39 / 100), abs=0.01)  # scored on 39


def test_reconstruct_on_an_unreadable_file_stops_or_skips_and_counts(run, data, tmp_path):
    out = tmp_path / "grid.png"
    argv = ["reconstruct", run["dir"], "--test-data", data["val_bad"], "--n", "40", "--out", out, "--threads", "1"]
    status, stdout, stderr = cli(argv)
    error_line(status, stderr, str(data["bad_file"]), "--on-error skip")
    status, stdout, stderr = cli([*argv, "--on-error", "skip"])
    assert status == 0, stderr
    assert "39 rows" in stdout and "skipped 1 unreadable image file(s)" in stdout and out.is_file()


def test_training_skips_a_corrupt_first_file_with_pictures_on(data, tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = train_run(out, f"data.name={data['first_bad']}", "model.in_chans=3",
                                       "data.on_error=skip", "train.picture_every=1")
    assert status == 0, stderr
    assert sorted(p.name for p in (out / "pictures").glob("reconstruction_*.png")), "no reconstruction pictures"
    assert "measured on 15 images" in stdout  # 16 files, the corrupt one left out
    status, stdout, stderr = train_run(tmp_path / "raise", f"data.name={data['first_bad']}", "model.in_chans=3")
    error_line(status, stderr, str(data["first_bad_file"]))


# ------------------------------------------------------------------------------ 5: labels are needed

@pytest.mark.parametrize("protocol", ["probes", "knn", "fewshot"])
@pytest.mark.parametrize("train", ["flat", "plain_npz"])
def test_unlabelled_train_data_is_refused_before_any_work(run, data, protocol, train):
    status, stdout, stderr = cli(["eval", protocol, run["dir"], "--train-data", data[train], "--test-data",
                                  data["val"], "--threads", "1"])
    error_line(status, stderr, "need labelled train data", str(data[train]))
    assert "features" not in stderr and stdout == ""


def test_unlabelled_test_data_and_split_npz_without_labels_are_refused(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["flat"], "--threads", "1"])
    error_line(status, stderr, "need labelled test data", str(data["flat"]))
    status, stdout, stderr = cli(["eval", "knn", run["dir"], "--data", data["split_unlabelled_npz"],
                                  "--threads", "1"])
    error_line(status, stderr, "need labelled train data")


# ------------------------------------------------------------------------------ 6: classes and usage errors

def test_limit_1_leaves_one_class_and_is_one_line(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["val"], "--limit", "1",
                                  "--threads", "1"])
    error_line(status, stderr, "at least 2 classes", "--limit")


def test_test_classes_absent_from_train_are_one_line(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--train-data", data["two_class_train_npz"],
                                  "--test-data", data["split_npz"], "--threads", "1"])
    error_line(status, stderr, "holds class(es) [2, 3]", "has no image of")


@pytest.mark.parametrize("argv, needle", [
    (["--mask-ratio", "1.0"], "argument --mask-ratio: expected a number in [0, 1), got '1.0'"),
    (["--n", "0"], "argument --n: expected a positive integer, got '0'"),
])
def test_reconstruct_usage_errors_are_system_exit_2(run, tmp_path, argv, needle):
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["reconstruct", str(run["dir"]), "--split", "train", *argv, "--out", str(out)])
    assert exit_info.value.code == 2
    error_line(2, err.getvalue(), needle)
    assert not out.exists()


def test_reconstruct_mask_ratio_hiding_every_patch_is_one_line(run, tmp_path):
    out = tmp_path / "grid.png"
    status, stdout, stderr = cli(["reconstruct", run["dir"], "--split", "train", "--mask-ratio", "0.95",
                                  "--out", out, "--threads", "1"])
    error_line(status, stderr, "hides all 16 patches", "at most 0.9375")
    status, stdout, stderr = cli(["reconstruct", run["dir"], "--split", "train", "--mask-ratio", "0.9375",
                                  "--n", "2", "--out", out, "--threads", "1"])
    assert status == 0, stderr


# ------------------------------------------------------------------------------ test classes numbered like train's

def test_a_test_folder_with_some_of_the_train_classes_is_numbered_like_train(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["val_bd"], "--threads", "1"])
    assert status == 0, stderr
    assert data_lines(stdout)["test"]["counts"] == {"b": VAL_PER_CLASS, "d": VAL_PER_CLASS}
    _, config = load_model(run["dir"])
    train, test = eval_splits(config, eval_args(test_data=str(data["val_bd"])))
    assert train.classes == CLASSES and test.classes == CLASSES
    assert sorted(torch.unique(test.labels).tolist()) == [1, 3]  # b and d, as in train


def test_a_test_folder_with_an_unknown_class_is_one_line(run, data):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["val_unknown"],
                                  "--threads", "1"])
    error_line(status, stderr, "class folder 'zebra' is not one of the train classes (a, b, c, d)")


# ------------------------------------------------------------------------------ 12: channels and pixel statistics

def test_colour_images_into_a_grey_model_are_refused_unless_converted(data, tmp_path):
    status, stdout, stderr = train_run(tmp_path / "grey", f"data.name={data['plain']}", "model.in_chans=1")
    error_line(status, stderr, "holds colour images", "model.in_chans=3", "data.convert_channels=true")
    assert not (tmp_path / "grey").exists()
    out = tmp_path / "converted"
    status, stdout, stderr = train_run(out, f"data.name={data['plain']}", "model.in_chans=1",
                                       "data.convert_channels=true")
    assert status == 0, stderr
    assert len(config_json(out)["model"]["pixel_mean"]) == 1
    # the run converts its own images; a colour test folder named on the command line must be converted on purpose
    argv = ["eval", "knn", out, "--test-data", data["val"], "--threads", "1"]
    error_line(*cli(argv)[::2], "holds colour images", "--convert-channels")
    status, stdout, stderr = cli([*argv, "--convert-channels"])
    assert status == 0, stderr


def test_grey_images_into_a_colour_model_are_refused_unless_converted(run, data, tmp_path):
    status, stdout, stderr = train_run(tmp_path / "rgb", f"data.name={data['grey']}", "model.in_chans=3")
    error_line(status, stderr, "holds grey images", "model.in_chans=1")
    argv = ["eval", "knn", run["dir"], "--test-data", data["grey"], "--threads", "1"]
    error_line(*cli(argv)[::2], "holds grey images", "--convert-channels")
    status, stdout, stderr = cli([*argv, "--convert-channels"])
    assert status == 0, stderr


def test_rgb_run_stores_the_measured_per_channel_mean(run, data):
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE)), dtype=np.float64) / 255
                       for f in sorted(data["plain"].rglob("*.png"))])
    mean, std = images.reshape(-1, 3).mean(axis=0), images.reshape(-1, 3).std(axis=0, ddof=1)
    model = config_json(run["dir"])["model"]
    assert len(model["pixel_mean"]) == 3 and len(model["pixel_std"]) == 3
    assert model["pixel_mean"] == pytest.approx(mean.tolist(), abs=0.02)
    assert model["pixel_std"] == pytest.approx(std.tolist(), abs=0.02)
    assert f"measured on {len(images)} images" in run["stdout"]
    assert f"model.pixel_mean={model['pixel_mean']}" in run["stdout"]
    loaded, _ = load_model(run["dir"])  # and the model normalises with them
    assert loaded.pixel_mean.flatten().tolist() == pytest.approx(model["pixel_mean"])
    assert loaded.pixel_std.flatten().tolist() == pytest.approx(model["pixel_std"])


def test_no_preset_carries_pixel_statistics():
    carrying = {name: preset["model"] for name, preset in all_presets().items()
                if preset.get("model", {}).get("pixel_mean") or preset.get("model", {}).get("pixel_std")}
    assert not carrying


def test_a_grey_run_measures_its_mean_instead_of_carrying_fashion_mnist_s(data, tmp_path):
    preset = load_config("mae_micro_fmnist").model
    assert not preset.pixel_mean and not preset.pixel_std  # presets leave them to be measured
    out = tmp_path / "grey_run"
    status, stdout, stderr = train_run(out, f"data.name={data['grey_npz']}", "model.in_chans=1")
    assert status == 0, stderr
    expected = np.rint(np.load(data["grey_npz"])["images"] * 255).mean() / 255  # stored as uint8 steps
    mean = config_json(out)["model"]["pixel_mean"]
    assert len(mean) == 1 and mean[0] == pytest.approx(expected, abs=0.02)
    assert abs(mean[0] - 0.286) > 0.1
    # set by hand, they are kept and nothing is measured
    out = tmp_path / "given"
    status, stdout, stderr = train_run(out, f"data.name={data['grey_npz']}", "model.in_chans=1",
                                       "model.pixel_mean=[0.286]", "model.pixel_std=[0.353]")
    assert status == 0, stderr
    assert "pixel statistics" not in stdout
    assert config_json(out)["model"]["pixel_mean"] == [0.286]


# ------------------------------------------------------------------------------ 13: --threads

@pytest.mark.parametrize("command", ["eval linear", "eval knn", "eval probes", "eval fewshot", "eval finetune",
                                     "eval layerwise", "eval tokenizer", "eval generation", "reconstruct", "tokenize",
                                     "inpaint", "outpaint", "edit"])
def test_every_command_reading_a_checkpoint_and_data_takes_the_data_options(command):
    status, stdout, stderr = cli([*command.split(), "--help"])
    assert status == 0, stderr
    for option in ["--data", "--train-data", "--test-data", "--limit", "--on-error", "--convert-channels", "--seed",
                   "--threads"]:
        assert re.search(rf"{option}\b", stdout), (command, option)


def test_threads_option_is_accepted(run, data, tmp_path):
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--test-data", data["val"], "--limit", "8",
                                  "--threads", "1"])
    assert status == 0, stderr
    status, stdout, stderr = cli(["reconstruct", run["dir"], "--split", "train", "--n", "2", "--threads", "1",
                                  "--out", tmp_path / "grid.png"])
    assert status == 0, stderr
    status, stdout, stderr = cli(["eval", "probes", run["dir"], "--threads", "-3"])
    error_line(status, stderr, "argument --threads: expected an integer in [0, 1024], got '-3'")
