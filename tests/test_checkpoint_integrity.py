"""Checkpoint integrity: a damaged weights or trainer-state file, NaN/inf weights and files that
are not checkpoints are each refused with one line naming the file (exit status 2 on the command
line), instead of loading garbage; checkpoints without checksums.sha256 (older versions) still load."""
import contextlib
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mimkit.cli import main
from mimkit.files.checkpoint_folder import CHECKSUMMED_FILES, MODEL_FILE, STATE_FILE
from mimkit.registry import load_model
from mimkit.engine.checkpoint import load_trainer_state, save_checkpoint
from mimkit.files.integrity import CHECKSUM_FILE, check_finite, verify_checksum, write_checksums
from mimkit.errors import CheckpointError
from mimkit.hub import from_pretrained, read_checkpoint, save_pretrained
from mimkit.registry import build_model
from mimkit.methods.mae import MAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16",
        "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1",
        "model.decoder_num_heads=2", "train.batch_size=16", "train.steps=2", "train.progress=false",
        "train.picture_every=0"]
STEP = "step_00000002"


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of `mimkit ARGV` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    return status, err.getvalue()


def one_line_error(status: int, stderr: str) -> str:
    """The single error line of a refused command (asserting status 2 and no traceback)."""
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def tiny_mae():
    return build_model("mae", MAEConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2,
                                        decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2))


def data_section(path: Path) -> tuple[int, int]:
    """(start, end) byte offsets of the tensor data of a safetensors file (after its JSON header)."""
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + header_len, path.stat().st_size


def overwrite_middle(path: Path, size: int = 4096) -> None:
    """Overwrite `size` bytes in the middle of the data section with finite float32 values (0.5):
    the header stays valid and no NaN appears, so only the checksum can tell."""
    start, end = data_section(path)
    assert end - start > 2 * size, "the test model is too small for this corruption"
    offset = (start + end) // 2 // 4 * 4  # float32-aligned, as tensors start at aligned offsets
    raw = bytearray(path.read_bytes())
    new = struct.pack("<f", 0.5) * (size // 4)
    assert raw[offset:offset + size] != new
    raw[offset:offset + size] = new
    path.write_bytes(bytes(raw))


def resume_argv(run: Path) -> list[str]:
    """`mimkit train` resuming `run` with its own recipe (it loads the checkpoint, then has no step left)."""
    return ["train", "mae_micro_fmnist", *TINY, "--out", str(run), "--resume"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("integrity") / "run"
    assert run_cli(["train", "mae_micro_fmnist", *TINY, "--out", str(run)])[0] == 0
    return run


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the trained run (tests damage it)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# ------------------------------------------------------------------ checksums at save
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_records_the_sha256_of_weights_and_trainer_state_in_sha256sum_format(tmp_path):
    ckpt = save_checkpoint(tmp_path / "run", 1, tiny_mae(), {"method": "mae"}, {"step": 1})
    # config.json is left out: users may edit it
    assert (ckpt / CHECKSUM_FILE).read_text() == (f"{sha256(ckpt / MODEL_FILE)}  {MODEL_FILE}\n"
                                                   f"{sha256(ckpt / STATE_FILE)}  {STATE_FILE}\n")
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", CHECKSUM_FILE], cwd=ckpt, capture_output=True).returncode == 0
    weights_only = save_checkpoint(tmp_path / "run", 2, tiny_mae(), {"method": "mae"})
    assert (weights_only / CHECKSUM_FILE).read_text() == f"{sha256(weights_only / MODEL_FILE)}  {MODEL_FILE}\n"


# ------------------------------------------------------------------ (a) overwritten weights
def test_overwritten_weights_are_refused_in_one_line_by_eval(run):
    ckpt = run / "checkpoints" / STEP
    overwrite_middle(ckpt / MODEL_FILE)
    proc = subprocess.run([sys.executable, "-m", "mimkit", "eval", "probes", str(run), "--limit", "300"],
                          capture_output=True, text=True, timeout=300)
    line = one_line_error(proc.returncode, proc.stderr)
    assert str(ckpt / MODEL_FILE) in line and "corrupt" in line and "sha256" in line, line
    assert f"delete {ckpt}" in line  # what to do
    # the damage keeps the file loadable: without the checksum (an older checkpoint) it loads silently
    (ckpt / CHECKSUM_FILE).unlink()
    load_model(run)


def test_overwritten_weights_are_refused_by_reconstruct_and_write_no_picture(run, tmp_path):
    overwrite_middle(run / "checkpoints" / STEP / MODEL_FILE)
    out = tmp_path / "grid.png"
    line = one_line_error(*run_cli(["reconstruct", str(run), "--out", str(out)]))
    assert "corrupt" in line and MODEL_FILE in line
    assert not out.exists()


# ------------------------------------------------------------------ (b) non-finite weights
def test_nan_weights_with_a_matching_checksum_are_refused_naming_the_keys(run):
    ckpt = run / "checkpoints" / STEP
    state = load_file(str(ckpt / MODEL_FILE))
    floating = [k for k, v in state.items() if v.is_floating_point() and v.numel() >= 3]
    first, second = floating[0], floating[-1]
    state[first].view(-1)[:3] = float("nan")
    state[second].view(-1)[0] = float("-inf")
    save_file(state, str(ckpt / MODEL_FILE))
    write_checksums(ckpt, CHECKSUMMED_FILES)  # as if saved that way: the checksum matches
    verify_checksum(ckpt / MODEL_FILE)
    line = one_line_error(*run_cli(["reconstruct", str(run), "--out", str(run / "grid.png")]))
    assert str(ckpt / MODEL_FILE) in line and "non-finite" in line, line
    assert f"{first} (3 NaN/inf)" in line and f"{second} (1 NaN/inf)" in line, line


def test_check_finite_names_only_the_first_keys_and_counts_the_rest():
    state = {f"w{i}": torch.full((2,), float("inf")) for i in range(5)}
    state["ok"], state["steps"] = torch.zeros(3), torch.tensor(7)
    with pytest.raises(CheckpointError) as info:
        check_finite(state, "SOURCE")
    message = str(info.value)
    assert message.startswith("SOURCE holds non-finite weights: w0 (2 NaN/inf), w1 (2 NaN/inf), w2 (2 NaN/inf) "
                              "and 2 more tensors"), message
    check_finite({"ok": torch.zeros(3, dtype=torch.bfloat16), "n": torch.arange(3)}, "SOURCE")


# ------------------------------------------------------------------ (c) the hub reader
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_hub_reader_refuses_inf_naming_the_key(tmp_path, suffix):
    state = tiny_mae().state_dict()
    key = "decoder_pred.weight"
    state[key].view(-1)[1] = float("inf")
    path = tmp_path / f"official{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and f"{key} (1 NaN/inf)" in str(info.value)


def test_save_pretrained_records_a_checksum_that_loading_verifies(tmp_path):
    folder = save_pretrained(tiny_mae(), tmp_path / "export")
    assert (folder / CHECKSUM_FILE).read_text().split()[1] == MODEL_FILE
    from_pretrained(folder)
    overwrite_middle(folder / MODEL_FILE, size=256)
    for load in (from_pretrained, lambda f: read_checkpoint(f / MODEL_FILE)):
        with pytest.raises(CheckpointError, match="corrupt") as info:
            load(folder)
        assert str(folder / MODEL_FILE) in str(info.value)


# ------------------------------------------------------------------ (d) older checkpoints
def test_checkpoint_without_checksums_still_loads_and_resumes(run):
    ckpt = run / "checkpoints" / STEP
    (ckpt / CHECKSUM_FILE).unlink()
    model, config = load_model(run)
    assert config.method == "mae"
    assert load_trainer_state(ckpt)["step"] == 2
    assert run_cli(resume_argv(run)) == (0, "")  # reads both files (the next test: it refuses a damaged state)


# ------------------------------------------------------------------ (e) trainer state
def test_corrupt_trainer_state_makes_resume_one_line_and_writes_nothing(run):
    ckpt = run / "checkpoints" / STEP
    raw = bytearray((ckpt / STATE_FILE).read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    (ckpt / STATE_FILE).write_bytes(bytes(raw))
    before = (run / "log.csv").read_text()
    line = one_line_error(*run_cli(resume_argv(run)))
    assert f"cannot read {ckpt / STATE_FILE}" in line and "corrupt" in line, line
    assert (run / "log.csv").read_text() == before


# ------------------------------------------------------------------ corrupt files of any kind
def garble_header(data: bytes) -> bytes:
    """The JSON header's braces replaced: a valid length, an unparsable header."""
    return data[:8] + data[8:64].replace(b"{", b"#").replace(b"}", b"#") + data[64:]


def huge_header_length(data: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + data[8:]


def random_bytes(data: bytes) -> bytes:
    return torch.randint(0, 256, (len(data),), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8).numpy().tobytes()


def shifted_offsets(data: bytes) -> bytes:
    """A header whose data offsets point past the end of the file."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    for name, entry in header.items():
        if name != "__metadata__":
            entry["data_offsets"] = [v + 10**6 for v in entry["data_offsets"]]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


@pytest.mark.parametrize("damage", [garble_header, huge_header_length, random_bytes, shifted_offsets])
def test_corrupt_safetensors_of_any_kind_is_one_line(run, tmp_path, damage):
    ckpt = run / "checkpoints" / STEP
    weights = ckpt / MODEL_FILE
    weights.write_bytes(damage(weights.read_bytes()))
    out = tmp_path / "grid.png"
    line = one_line_error(*run_cli(["reconstruct", str(run), "--out", str(out)]))
    assert f"cannot read {weights}" in line and "corrupt" in line, line
    (ckpt / CHECKSUM_FILE).unlink()  # unverified (older checkpoint): the parser must refuse it in one line
    line = one_line_error(*run_cli(["reconstruct", str(run), "--out", str(out)]))
    assert f"cannot read {weights}" in line and "not a valid safetensors file" in line, line
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(weights)
    assert str(weights) in str(info.value)


def test_a_damaged_checksum_file_is_named(run):
    ckpt = run / "checkpoints" / STEP
    (ckpt / CHECKSUM_FILE).write_text("not a checksum line\n")
    line = one_line_error(*run_cli(["reconstruct", str(run), "--out", str(run / "grid.png")]))
    assert f"cannot read {ckpt / CHECKSUM_FILE}: line 1" in line and "delete it" in line, line


# ------------------------------------------------------------------ (f) files that are not checkpoints
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(run, tmp_path):
    out = tmp_path / "grid.png"
    line = one_line_error(*run_cli(["reconstruct", str(run / "log.csv"), "--out", str(out)]))
    assert line == (f"mimkit: error: {run / 'log.csv'} is a file but not a mimkit checkpoint; pass a run folder, "
                    f"a checkpoint folder or its {MODEL_FILE}")
    official = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": tiny_mae().state_dict()}, official)
    line = one_line_error(*run_cli(["eval", "probes", str(official), "--limit", "300"]))
    assert "is a file but not a mimkit checkpoint" in line and "mimkit convert" in line, line
