"""Picture outputs: the suffix picks the format, any other suffix and a missing folder are refused
before any work (one line, exit 2, nothing created), the write is atomic, and the training
callbacks still create RUN/pictures."""
import io

import numpy as np
import pytest
from PIL import Image

from mimkit.cli import main
from mimkit.errors import MimkitError
from mimkit.pictures import PICTURE_FORMATS, check_picture_path, save_grid, save_run_picture

pytestmark = pytest.mark.usefixtures("one_thread")

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".JPEG": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}
LOSSLESS = (".png", ".webp", ".bmp", ".tif", ".tiff")


def noisy(mode: str) -> Image.Image:
    shape = (12, 10) if mode == "L" else (12, 10, 3)
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), mode=mode)


def jpeg_bytes(picture: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("suffix", list(FORMATS))
def test_suffix_picks_the_format_and_grey_stays_grey(tmp_path, suffix, mode):
    picture = noisy(mode)
    path = save_grid(picture, tmp_path / f"grid{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"grid{suffix}"]  # no temp file left
    with Image.open(path) as written:
        assert written.format == FORMATS[suffix]
        assert written.mode == (mode if suffix != ".webp" else "RGB")  # WebP has no grey mode
        pixels = np.asarray(written.convert(mode), dtype=int)
    if suffix in LOSSLESS:
        assert np.array_equal(pixels, np.asarray(picture))
    else:  # quality 95, not PIL's default 75
        assert path.read_bytes() == jpeg_bytes(picture, 95) != jpeg_bytes(picture, 75)


@pytest.mark.parametrize("name", ["grid.gif", "grid", "grid.png.txt"])
def test_other_or_missing_suffix_is_refused_naming_path_and_suffixes(tmp_path, name):
    with pytest.raises(MimkitError) as info:
        save_grid(noisy("L"), tmp_path / name)
    assert str(tmp_path / name) in str(info.value) and ", ".join(PICTURE_FORMATS) in str(info.value)
    assert not any(tmp_path.iterdir())


def test_missing_folder_is_refused_not_created(tmp_path):
    path = tmp_path / "new" / "deeper" / "grid.png"
    with pytest.raises(MimkitError, match=f"folder {tmp_path / 'new' / 'deeper'} does not exist; create it first"):
        check_picture_path(path)
    with pytest.raises(MimkitError):
        save_grid(noisy("L"), path)
    assert not (tmp_path / "new").exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = save_grid(noisy("L"), tmp_path / "grid.jpg")
    before = path.read_bytes()
    with pytest.raises(MimkitError, match=f"cannot write picture {path}"):
        save_grid(Image.new("RGBA", (4, 4)), path)  # JPEG has no alpha: PIL raises OSError mid-write
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["grid.jpg"]


def test_run_pictures_folder_is_created(tmp_path):
    path = save_run_picture(noisy("RGB"), tmp_path / "run", "samples_step_00000002.png")
    assert path == tmp_path / "run" / "pictures" / "samples_step_00000002.png" and path.is_file()


# ---------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step MAE run on digits whose reconstruction callback drew one picture."""
    run = tmp_path_factory.mktemp("pictures") / "run"
    assert main(["train", "mae_micro_fmnist", "data.name=digits", "data.image_size=8", "model.img_size=8",
                 "model.patch_size=2", "train.batch_size=32", "train.steps=2", "train.progress=false",
                 "train.picture_every=2", "--out", str(run)]) == 0
    return run


def test_training_callback_still_writes_run_pictures(run):
    with Image.open(run / "pictures" / "reconstruction_step_00000002.png") as picture:
        assert picture.format == "PNG"


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".webp", "WEBP")])
def test_reconstruct_writes_the_suffixs_format(run, tmp_path, capsys, suffix, fmt):
    out = tmp_path / f"grid{suffix}"
    assert main(["reconstruct", str(run), "--n", "2", "--scale", "1", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as picture:
        assert picture.format == fmt and picture.size == (3 * 10 + 2, 2 * 10 + 2)


@pytest.mark.parametrize("out, message", [
    ("grid.gif", "the suffix must be one of .png, .jpg"),
    ("grid", "the suffix must be one of .png, .jpg"),
    ("missing/grid.png", "missing does not exist; create it first or choose another --out"),
])
def test_reconstruct_refuses_bad_out_in_one_line_creating_nothing(run, tmp_path, capsys, out, message):
    assert main(["reconstruct", str(run), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["reconstruct"], ["generate"], ["inpaint"], ["edit", "--box", "0,0,2,2",
                                                                                  "--label", "1"],
                                     ["outpaint", "--side", "left"]])
def test_bad_out_is_refused_before_the_checkpoint_is_read(tmp_path, capsys, command):
    argv = [command[0], str(tmp_path / "no_such_run"), *command[1:], "--out", str(tmp_path / "grid.gif")]
    assert main(argv) == 2
    assert "grid.gif: the suffix must be one of" in capsys.readouterr().err  # not "checkpoint ... does not exist"
