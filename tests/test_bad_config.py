"""Bad configs, arguments, checkpoints and output folders: every case exits with status 2 and one
line naming the field or path, without a traceback and without creating the run folder; the
config loader and the CLI are fuzzed with hypothesis."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mimkit.cli import main
from mimkit.config import RunConfig, load_config, to_dict
from mimkit.errors import ConfigError

TINY = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16",
        "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1",
        "model.decoder_num_heads=2", "train.batch_size=16", "train.steps=2", "train.progress=false",
        "train.picture_every=0"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of `mimkit ARGV` in this process; argparse's SystemExit becomes a status."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_info:
            status = exit_info.code
    return status, err.getvalue()


def assert_one_line_error(status: int, stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert needle in lines[0], lines[0]


CONFIG_CASES = {  # case: (overrides, what the one line must say)
    "unknown key": (["train.stepz=3"], "unknown key 'train.stepz'; valid keys: steps"),
    "unknown section": (["trian.steps=3"], "unknown key 'trian'"),
    "wrong type (int)": (["train.steps=ten"], "train.steps must be an integer, got 'ten'"),
    "wrong type (NaN for int)": (["train.steps=.nan"], "train.steps must be an integer"),
    "wrong type (bool)": (["train.progress=maybe"], "train.progress must be true or false"),
    "wrong type (pair)": (["data.crop_scale=0.5"], "data.crop_scale must be a list of 2 values"),
    "section given a value": (["optim=5"], "optim must be a mapping, got 5"),
    "value used as a section": (["train.steps.x=1"], "'steps' is a value, not a section"),
    "not key=value": (["trainsteps"], "not of the form key=value"),
    "unknown method": (["method=nope"], "known methods"),
    "negative batch size": (["train.batch_size=-8"], "train.batch_size must be >= 1, got -8"),
    "negative image size": (["data.image_size=-8"], "data.image_size must be positive, got -8"),
    "negative model width": (["model.embed_dim=-16"], "model.embed_dim=-16 must be positive"),
    "negative learning rate": (["optim.blr=-1"], "optim.blr must be >= 0"),
    "image size not divisible by patch": (["model.img_size=9", "data.image_size=9"],
                                          "model.img_size [9, 9] must be positive and divisible by model.patch_size 2"),
    "mask ratio 1.0": (["model.mask_ratio=1.0"], "model.mask_ratio must be in [0, 1), got 1.0"),
    "mask ratio -0.1": (["model.mask_ratio=-0.1"], "model.mask_ratio must be in [0, 1), got -0.1"),
    "data.image_size != model.img_size": (["data.image_size=16"], "data.image_size=16 but model.img_size=8"),
    "max_nonfinite_steps 0": (["train.max_nonfinite_steps=0"], "train.max_nonfinite_steps must be >= 1"),
    "bad on_error": (["data.on_error=ignore"], "data.on_error must be raise or skip"),
    "bad device": (["train.device=tpu"], "train.device 'tpu' is not a device"),
    "missing dataset": (["data.name=/nonexistent/images"], "data.name '/nonexistent/images'"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_one_line_and_creates_nothing(tmp_path, case):
    overrides, needle = CONFIG_CASES[case]
    out = tmp_path / "run"
    assert_one_line_error(*run_cli(["train", "mae_micro_fmnist", *TINY, *overrides, "--out", str(out)]), needle)
    assert not out.exists()


def test_bad_arguments_and_yaml_files_are_one_line(tmp_path):
    assert_one_line_error(*run_cli(["train", "mae_micro_fmnist", "--bogus"]), "unrecognized arguments: --bogus")
    assert_one_line_error(*run_cli(["train"]), "the following arguments are required: config")
    assert_one_line_error(*run_cli(["nope"]), "invalid choice: 'nope'")
    assert_one_line_error(*run_cli(["train", str(tmp_path / "missing.yaml")]), "missing.yaml does not exist")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    assert_one_line_error(*run_cli(["train", str(tmp_path / "bad.yaml")]), "bad.yaml is not valid YAML")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert_one_line_error(*run_cli(["train", str(tmp_path / "list.yaml")]), "list.yaml must hold a mapping")
    (tmp_path / "multi.yaml").write_text("method: mae\nmodel: {embed_dim: 'wide'}\n")
    assert_one_line_error(*run_cli(["train", str(tmp_path / "multi.yaml")]), "model.embed_dim must be an integer")


def test_unwritable_output_folder_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {tmp_path / "file" / "run": "cannot be created: " + str(tmp_path / "file") + " is a file",
             tmp_path / "file": "is a file, not a folder",
             Path("/proc/mimkit_run"): "train.out_dir=/proc/mimkit_run cannot be created"}
    for out, needle in cases.items():
        assert_one_line_error(*run_cli(["train", "mae_micro_fmnist", *TINY, "--out", str(out)]), needle)
        assert not out.is_dir()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad_config") / "run"
    assert run_cli(["train", "mae_micro_fmnist", *TINY, "--out", str(run)])[0] == 0
    return run


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest))


def test_checkpoint_not_matching_its_config_is_named(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "step_00000002"
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["embed_dim"] = 32
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "grid.png"
    assert_one_line_error(*run_cli(["reconstruct", str(run), "--out", str(out)]),
                          f"{ckpt / 'model.safetensors'} does not match the model built from its config.json")
    assert not out.exists()
    (ckpt / "config.json").write_text("{not json")
    assert_one_line_error(*run_cli(["reconstruct", str(ckpt), "--out", str(out)]), f"cannot read {ckpt / 'config.json'}")
    (ckpt / "config.json").unlink()
    assert_one_line_error(*run_cli(["reconstruct", str(ckpt), "--out", str(out)]), "has model.safetensors but no config.json")


def test_corrupt_weights_and_resume_with_another_model_are_named(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = (run / "log.csv").read_text()
    argv = ["train", "mae_micro_fmnist", *TINY, "train.steps=4", "--out", str(run), "--resume"]
    assert_one_line_error(*run_cli([*argv, "model.embed_dim=32"]),
                          "model.embed_dim=16 there, 32 here")
    ckpt = run / "checkpoints" / "step_00000002"
    (ckpt / "trainer_state.pt").write_bytes(b"garbage")
    assert_one_line_error(*run_cli(argv), f"cannot read {ckpt / 'trainer_state.pt'}")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 10)
    assert_one_line_error(*run_cli(argv), f"cannot read {ckpt / 'model.safetensors'}")
    assert (run / "log.csv").read_text() == before  # a refused resume writes nothing


# ----------------------------------------------------------------------------------- fuzzing

KEYS = [f"{section}.{key}" for section, fields in to_dict(RunConfig(model=load_config("mae_micro_fmnist").model)).items()
        if isinstance(fields, dict) for key in fields] + ["method", "model", "data", "train", "optim"]
VALUES = st.one_of(st.text(max_size=12), st.integers(-10**12, 10**12).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", "null", "~", "true", "no", "[1, 2]", "[0.3, 0.1]", "[]", "{a: 1}", "1e400",
                                    "-0", ".inf", "-.inf", ".nan", "[", "{", "'", "!!python/object:os.system x",
                                    "2024-01-01", "0x10", "1_000", "mae", "fp32", "bf16", "raise", "skip"]))
OVERRIDES = st.one_of(st.text(max_size=30), st.tuples(st.sampled_from(KEYS), VALUES).map("=".join),
                      st.tuples(st.text(max_size=10), VALUES).map("=".join))


@settings(max_examples=200, deadline=None)
@given(overrides=st.lists(OVERRIDES, max_size=4))
def test_fuzz_config_loader_raises_config_error_or_succeeds(overrides):
    try:
        config = load_config("mae_micro_fmnist", overrides)
    except ConfigError as err:
        assert str(err)
    else:
        assert isinstance(config, RunConfig)


TOKENS = st.one_of(OVERRIDES, st.sampled_from(["--resume", "--out", "--bogus", "-x", "--", "-", "--out=", "=", "=="]),
                   st.text(max_size=8))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(TOKENS.filter(lambda t: not t.lstrip("-").startswith("h") or not t.startswith("-")),
                       max_size=4))
def test_fuzz_cli_is_a_one_line_error_never_a_traceback(tmp_path, tokens):
    # the last override points at no dataset, so whatever the random arguments did, no run starts;
    # `--out DIR` comes between them so that a random trailing option cannot swallow the override
    out = tmp_path / "fuzz_run"
    argv = ["train", "mae_micro_fmnist", *TINY, *tokens, "--out", str(out), "data.name=/nonexistent/fuzz"]
    status, stderr = run_cli(argv)
    assert status == 2 and len(stderr.strip().splitlines()) == 1, (tokens, stderr)
    assert stderr.startswith(("mimkit: error: ", "mimkit train: error: ")), stderr
    assert not out.exists()


def test_fresh_run_into_an_existing_run_is_refused_unless_overwrite(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = (run / "log.csv").read_text()
    argv = ["train", "mae_micro_fmnist", *TINY, "--out", str(run)]
    assert_one_line_error(*run_cli(argv), f"train.out_dir={run} already holds a run (checkpoint step_00000002)")
    assert (run / "log.csv").read_text() == before
    assert run_cli([*argv, "train.overwrite=true", "train.steps=1"])[0] == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000001"]
    assert_one_line_error(*run_cli(["train", "mae_micro_fmnist", *TINY, "train.out_dir= "]), "train.out_dir is empty")
