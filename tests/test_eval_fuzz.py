"""The command lines of `mimkit eval` and `mimkit reconstruct` on a tiny trained run, fuzzed with
hypothesis: whatever options and values are drawn, the outcome is exit 0 or one error line with
exit 2 - never a traceback nor another status. Every data source drawn is tiny, so no case runs long."""
import contextlib
import io
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from mimkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = ["data.image_size=16", "model.img_size=16", "model.patch_size=4", "model.in_chans=3",
              "model.embed_dim=16", "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=16",
              "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=8", "train.steps=2",
              "train.progress=false", "train.picture_every=0", "train.threads=1"]


def cli(argv) -> tuple[int, str]:
    """(exit status, stderr) of `mimkit ARGV` in this process; argparse's SystemExit is a status, and
    any other exception is status 1 with its traceback in stderr (so the assertion shows it)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_info:
            status = exit_info.code
        except Exception:  # noqa: BLE001 - a bug: reported by the caller's assertion
            err.write(traceback.format_exc())
            status = 1
    return status, err.getvalue()


def assert_exit_0_or_one_line(status, stderr: str, case) -> None:
    assert "Traceback" not in stderr, (case, stderr)
    assert status in (0, 2), (case, status, stderr)
    if status == 2:
        lines = [line for line in stderr.split("\n") if line.strip()]  # progress bars end in \r, not \n
        assert len(lines) == 1, (case, stderr)
        message = lines[0].rsplit("\r", 1)[-1]
        assert message.startswith(("mimkit: error: ", "mimkit eval: error: ", "mimkit reconstruct: error: ")), \
            (case, stderr)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> dict:
    """Tiny sources (4 classes of 16x16 RGB PNGs), a run trained on the split folder, an empty cwd."""
    root = tmp_path_factory.mktemp("eval_fuzz")
    rng = np.random.default_rng(0)

    def image(k):
        a = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
        a[4 * k:4 * k + 3] = [200, 60 * k, 40]
        return a

    def class_folder(path, per_class, grey=False):
        for k in range(4):
            (path / f"c{k}").mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(image(k)[..., 0] if grey else image(k)).save(path / f"c{k}" / f"{i}.png")

    class_folder(root / "split" / "train", 6)
    class_folder(root / "split" / "val", 3)
    class_folder(root / "other", 3)
    class_folder(root / "grey", 2, grey=True)
    class_folder(root / "val_bad", 2)
    (root / "val_bad" / "c1" / "0.png").write_bytes(b"not a png")
    (root / "flat").mkdir()
    for i in range(6):
        Image.fromarray(image(i % 4)).save(root / "flat" / f"{i}.png")
    x_train, y_train = np.stack([image(k) for k in range(4) for _ in range(4)]), np.repeat(np.arange(4), 4)
    x_test, y_test = np.stack([image(k) for k in range(4) for _ in range(2)]), np.repeat(np.arange(4), 2)
    np.savez(root / "split.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.savez(root / "labelled.npz", images=x_test, labels=y_test)
    np.savez(root / "plain.npz", images=x_test)
    run = root / "run"
    status, stderr = cli(["train", "mae_micro_fmnist", f"data.name={root / 'split'}", *TINY_MODEL, "--out", run])
    assert status == 0, stderr
    cwd = root / "cwd" / "a" / "b" / "c"  # relative paths a fuzz case makes up name nothing with images
    cwd.mkdir(parents=True)
    sources = [str(root / name) for name in ["split", "split/train", "split/val", "other", "grey", "val_bad", "flat",
                                              "split.npz", "labelled.npz", "plain.npz"]]
    return {"root": root, "run": run, "cwd": cwd, "sources": sources + ["/nonexistent/data", "", "."]}


# option -> (valid values, invalid values) drawn for it; data options get the fixture's sources
VALUES = {
    "--limit": (["0", "1", "3", "8", "99999999999999999999"], ["-1", "x", "2.5"]),
    "--seed": (["0", "1", "7", "9223372036854775807"], ["x", "-1", "99999999999999999999"]),
    "--threads": (["1", "0"], ["-3", "x", "1.5", "99999999999999999999"]),
    "--on-error": (["raise", "skip"], ["maybe", ""]),
    "--data-root": (["/nonexistent", ""], []),
    "--pool": (["cls", "mean", "both"], ["nope"]),
    "--shots": (["1", "1,2", "2"], ["0", "x", "1,,2", "", "-1"]),
    "--seeds": (["1", "2"], ["0", "-1", "x"]),
    "--batch-size": (["1", "3", "99999"], ["0", "-1", "x", "99999999999999999999"]),
    "--epochs": (["1", "2"], ["0", "x"]),
    "--split": (["train", "test"], ["val"]),
    "--trainable-blocks": (["0", "all", "5", "0,all"], ["x", "-1"]),
    "--layer-decay": (["1", "0.5"], ["0", "2", "nan"]),
    "--drop-path": (["0", "0.5"], ["1"]),
    "--label-smoothing": (["0.1", "0"], ["1", "-1"]),
    "--mixup": (["0", "0.8"], ["-1"]),
    "--cutmix": (["0", "1"], ["inf"]),
    "--lr": (["0.001"], ["0", "-1"]),
    "--blr": (["0.004"], ["0"]),
    "--n": (["1", "3", "99999999999999999999"], ["0", "-1", "x"]),
    "--mask-ratio": (["0.9375", "0.5", "0"], ["2", "1.0", "1", "0.95", "-0.1", "nan", "inf", "x"]),
    "--scale": (["1", "2"], ["0", "-1", "x", "65", "99999999999999999999"]),
    "--out": (["{out}"], ["grid.txt", "/nonexistent/grid.png", ""]),  # {out}: a PNG outside the cwd
}
DATA_OPTIONS = ["--data", "--train-data", "--test-data"]
COMMON = ["--limit", "--seed", "--threads", "--on-error", "--data-root"]
EVAL_OPTIONS = COMMON + ["--pool", "--shots", "--seeds", "--batch-size", "--epochs", "--split", "--trainable-blocks",
                         "--layer-decay", "--drop-path", "--label-smoothing", "--mixup", "--cutmix", "--lr", "--blr"]
RECONSTRUCT_OPTIONS = COMMON + ["--split", "--n", "--mask-ratio", "--scale", "--out"]
FLAGS = ["--convert-channels", "--convert-channels", "--bogus", "--", "-", "=", "--limit", "--train-data",
         "--test-data", "--out"]
FREE_TEXT = st.text(max_size=8).filter(lambda t: "\x00" not in t and "/" not in t and not t.startswith("~"))


def tokens(sources: list[str], options: list[str], out: str = ""):
    """Lists of command-line tokens: one of the command's `options` + a value (as two tokens or
    OPTION=VALUE; valid values three times as often as invalid ones, so that many cases run), any
    option with an invalid value (the other command's: unrecognized), flags, stray text."""
    good = {option: [v.format(out=out) for v in VALUES[option][0]] for option in options}
    bad = {option: values for option, (_, values) in VALUES.items() if values}
    good.update(dict.fromkeys(DATA_OPTIONS, sources))

    def pairs(table):
        return st.sampled_from(sorted(table)).flatmap(
            lambda option: st.tuples(st.just(option), st.sampled_from(table[option]), st.booleans()))

    as_tokens = st.one_of(pairs(good), pairs(good), pairs(good), pairs(bad)).map(
        lambda p: [f"{p[0]}={p[1]}"] if p[2] else [p[0], p[1]])
    single = st.one_of(st.sampled_from(FLAGS), FREE_TEXT).map(lambda t: [t])
    return st.lists(st.one_of(as_tokens, as_tokens, as_tokens, as_tokens, single), max_size=4).map(
        lambda groups: [t for group in groups for t in group])


def outcome(status: int, stderr: str) -> str:
    """A label of a case's outcome for hypothesis's statistics (--hypothesis-show-statistics)."""
    if status != 2:
        return f"exit {status}"
    return "usage error" if ": error: argument" in stderr or "unrecognized" in stderr else "mimkit error"


PROTOCOLS = ["linear", "knn", "probes", "fewshot", "layerwise", "finetune"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_eval_is_exit_0_or_a_one_line_error(fuzz, monkeypatch, data):
    monkeypatch.chdir(fuzz["cwd"])
    protocol = data.draw(st.sampled_from(PROTOCOLS))
    drawn = data.draw(tokens(fuzz["sources"], EVAL_OPTIONS))
    # the baseline keeps every case small; drawn tokens come after it and may override it
    argv = ["eval", protocol, fuzz["run"], "--limit", "8", "--threads", "1", "--seeds", "1", "--shots", "1",
            "--epochs", "1", *drawn]
    status, stderr = cli(argv)
    event(outcome(status, stderr))
    assert_exit_0_or_one_line(status, stderr, drawn)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_reconstruct_is_exit_0_or_a_one_line_error(fuzz, monkeypatch, data):
    monkeypatch.chdir(fuzz["cwd"])
    drawn = data.draw(tokens(fuzz["sources"], RECONSTRUCT_OPTIONS, str(fuzz["root"] / "fuzzed.png")))
    argv = ["reconstruct", fuzz["run"], "--out", fuzz["root"] / "grid.png", "--limit", "8", "--n", "2",
            "--threads", "1", *drawn]
    status, stderr = cli(argv)
    event(outcome(status, stderr))
    assert_exit_0_or_one_line(status, stderr, drawn)


# ------------------------------------------------------------------------------ the listed bad values, each

BAD = {  # extra arguments -> what the one line says
    "--limit -1": (["--limit", "-1"], "argument --limit: expected an integer >= 0, got '-1'"),
    "--limit x": (["--limit", "x"], "argument --limit: expected an integer >= 0, got 'x'"),
    "--on-error maybe": (["--on-error", "maybe"], "argument --on-error: invalid choice: 'maybe'"),
    "--test-data /nonexistent": (["--test-data", "/nonexistent/data"], "'/nonexistent/data' is neither"),
    "--train-data without value": (["--train-data"], "argument --train-data: expected one argument"),
    "--threads -3": (["--threads", "-3"], "argument --threads: expected an integer in [0, 1024], got '-3'"),
    "--seed x": (["--seed", "x"], "argument --seed: expected an integer in [0, 9223372036854775807], got 'x'"),
}
EVAL_BAD = {
    "--pool nope": (["--pool", "nope"], "argument --pool: invalid choice: 'nope'"),
    "--shots 0": (["--shots", "0"], "argument --shots: expected comma-separated positive integers"),
    "--batch-size 0": (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    "unlabelled train data": (["--train-data", "{root}/flat"], "need labelled train data"),
    "no test split": (["--data", "{root}/labelled.npz"], "no separate test split"),
}
RECONSTRUCT_BAD = {
    "--n 0": (["--n", "0"], "argument --n: expected a positive integer, got '0'"),
    "--mask-ratio 2": (["--mask-ratio", "2"], "argument --mask-ratio: expected a number in [0, 1), got '2'"),
    "--mask-ratio 0.95": (["--mask-ratio", "0.95"], "hides all 16 patches"),
    "--scale 0": (["--scale", "0"], "argument --scale: expected an integer in [1, 64], got '0'"),
    "--out grid.txt": (["--out", "{root}/grid.txt"], "the suffix must be one of .png"),
}


def one_line(status, stderr, needle):
    assert status == 2 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.split("\n") if line.strip()]
    assert len(lines) == 1 and needle in lines[0].rsplit("\r", 1)[-1], stderr


@pytest.mark.parametrize("case", list(BAD) + list(EVAL_BAD))
def test_bad_eval_arguments_are_one_line(fuzz, case):
    extra, needle = {**BAD, **EVAL_BAD}[case]
    extra = [e.format(root=fuzz["root"]) for e in extra]
    one_line(*cli(["eval", "probes", fuzz["run"], "--limit", "8", "--threads", "1", *extra]), needle)


@pytest.mark.parametrize("case", list(BAD) + list(RECONSTRUCT_BAD))
def test_bad_reconstruct_arguments_are_one_line(fuzz, case):
    extra, needle = {**BAD, **RECONSTRUCT_BAD}[case]
    extra = [e.format(root=fuzz["root"]) for e in extra]
    one_line(*cli(["reconstruct", fuzz["run"], "--out", fuzz["root"] / "grid.png", "--limit", "8", "--threads", "1",
                   *extra]), needle)


# Numbers too large for torch, and a path Python cannot open, ended in a traceback before the
# options had bounds (mimkit.commands.arguments.int_in) and --out was checked for NUL.
HUGE = "99999999999999999999"
TRACEBACKS = {
    "eval --seed huge": (["eval", "knn", "{run}", "--limit", "8", "--seed", HUGE],
                         "ValueError overflow in manual_seed"),
    "reconstruct --seed huge": (["reconstruct", "{run}", "--out", "{root}/grid.png", "--seed", HUGE],
                                "ValueError overflow in manual_seed"),
    "eval --threads huge": (["eval", "knn", "{run}", "--limit", "8", "--threads", HUGE],
                            "ValueError overflow in torch.set_num_threads"),
    "eval --batch-size huge": (["eval", "knn", "{run}", "--limit", "8", "--batch-size", HUGE],
                               "ValueError from itertools.islice in the DataLoader"),
    "reconstruct --scale huge": (["reconstruct", "{run}", "--out", "{root}/grid.png", "--scale", HUGE],
                                 "RuntimeError from torch.full"),
    "reconstruct --scale 100000": (["reconstruct", "{run}", "--out", "{root}/grid.png", "--scale", "100000"],
                                   "RuntimeError: torch.full cannot allocate the 737 TB grid"),
    "reconstruct --out with NUL": (["reconstruct", "{run}", "--out", "{root}/a\x00b.png"],
                                   "ValueError: embedded null byte (only from Python, not a shell)"),
}


@pytest.mark.parametrize("case", list(TRACEBACKS))
def test_out_of_range_numbers_are_one_line(fuzz, case):
    argv, _before = TRACEBACKS[case]
    argv = [a.format(run=fuzz["run"], root=fuzz["root"]) for a in argv]
    status, stderr = cli([*argv, "--limit", "8"] if argv[0] == "reconstruct" else argv)
    assert status == 2 and "Traceback" not in stderr, stderr
    assert len([line for line in stderr.split("\n") if line.strip()]) == 1, stderr
