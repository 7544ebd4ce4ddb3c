"""Bad and unusual image files in an image folder: odd modes are converted by hand-computed rules,
unusable files (empty, truncated, not an image, decompression bomb, smaller than a patch) raise
naming the file or are skipped and counted; property-based over modes, values and sizes."""
import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mimkit.cli import main
from mimkit.data import ImageFolder, ResumableLoader, decode_image
from mimkit.data.channels import LUMA
from mimkit.data.decode import UnusableImage
from mimkit.errors import DataError

HUGE = (8000, 6251)  # 50.008 megapixels: just over the 50 MP default guard


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def noisy_png() -> bytes:
    return png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)))


BAD_FILES = {  # name -> (bytes, what the error says)
    "empty.png": (lambda: b"", "cannot identify image file"),
    "truncated.png": (lambda: noisy_png()[:300], ""),
    "truncated.jpg": (lambda: png_bytes(Image.new("RGB", (64, 64), (9, 99, 199)), "JPEG")[:400], ""),
    "text.png": (lambda: b"this is not an image\n", "cannot identify image file"),
    "huge.png": (lambda: png_bytes(Image.new("1", HUGE)), "50.0 megapixels, more than data.max_image_pixels"),
    "tiny.png": (lambda: png_bytes(Image.new("L", (1, 3), 7)), "1x3 is smaller than 2x2 (one patch)"),
}


@pytest.fixture(scope="module")
def bad_bytes():
    return {name: make() for name, (make, _) in BAD_FILES.items()}


def folder_with(tmp: Path, bad: dict[str, bytes], good: int = 3) -> Path:
    for i in range(good):
        Image.new("L", (6, 6), 255).save(tmp / f"good_{i}.png")
    for name, data in bad.items():
        (tmp / name).write_bytes(data)
    return tmp


# ------------------------------------------------------------------ valid odd modes, by hand

def hand_cases():
    palette = Image.new("P", (3, 3), 2)
    palette.putpalette([0, 0, 0, 10, 20, 30, 200, 150, 100] + [0] * 759)
    a = 64 / 255
    return {  # name: (image, suffix, expected RGB in [0, 1] computed by hand)
        "CMYK": (Image.new("CMYK", (3, 3), (51, 102, 0, 51)), ".tif",
                 ((204 / 255) * (204 / 255), (153 / 255) * (204 / 255), 1.0 * (204 / 255))),  # (1-c)(1-k), ...
        "16-bit grey": (Image.fromarray(np.full((3, 3), 1000, np.uint16)), ".png", (1000 / 65535,) * 3),
        "16-bit grey tiff": (Image.fromarray(np.full((3, 3), 60000, np.uint16)), ".tif", (60000 / 65535,) * 3),
        "palette": (palette, ".png", (200 / 255, 150 / 255, 100 / 255)),
        "RGBA": (Image.new("RGBA", (3, 3), (200, 100, 50, 64)), ".png",  # on white: c * a + (1 - a)
                 tuple(c / 255 * a + 1 - a for c in (200, 100, 50))),
        "grey": (Image.new("L", (3, 3), 77), ".png", (77 / 255,) * 3),
    }


@pytest.mark.parametrize("name", list(hand_cases()))
def test_valid_odd_modes_convert_to_hand_computed_values(tmp_path, name):
    img, suffix, rgb = hand_cases()[name]
    img.save(tmp_path / f"x{suffix}")
    ds = ImageFolder(tmp_path, channels=3, image_size=3, min_side=2)
    # items are uint8: exact to half a step of 1/255 (CMYK: PIL's conversion rounds to 8 bits first)
    tol = 1.5 / 255 if name == "CMYK" else 0.5 / 255 + 1e-6
    assert torch.allclose(ds[0]["images"].float() / 255, torch.tensor(rgb).view(3, 1, 1).expand(3, 3, 3), atol=tol)
    grey = ImageFolder(tmp_path, channels=1, image_size=3)[0]["images"].float() / 255
    assert torch.allclose(grey, torch.full((1, 3, 3), sum(w * c for w, c in zip(LUMA, rgb))), atol=tol)


# ---------------------------------------------------------------- unusable files: raise or skip

@pytest.mark.parametrize("name", list(BAD_FILES))
def test_unusable_file_raises_naming_it(tmp_path, bad_bytes, name):
    folder_with(tmp_path, {name: bad_bytes[name]})
    ds = ImageFolder(tmp_path, channels=1, image_size=4, min_side=2)
    with pytest.raises(DataError) as info:
        ds[ds.files.index(str(tmp_path / name))]
    message = str(info.value)
    assert f"cannot read image {tmp_path / name}: " in message and "data.on_error=skip" in message
    assert BAD_FILES[name][1] in message and "\n" not in message


def test_unusable_files_are_skipped_and_counted(tmp_path, bad_bytes):
    ds = ImageFolder(folder_with(tmp_path, bad_bytes), channels=1, image_size=4, on_error="skip", min_side=2)
    loader = ResumableLoader(ds, batch_size=len(ds), seed=0)
    batch = next(loader)
    assert torch.equal(batch["images"], torch.full((3, 1, 4, 4), 255, dtype=torch.uint8))  # uint8 items
    assert loader.skipped_count == len(BAD_FILES)
    assert sorted(Path(p).name for p in loader.skipped_paths) == sorted(BAD_FILES)


TRAIN = ["data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16", "model.depth=1",
         "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2",
         "train.batch_size=9", "train.steps=2", "train.log_every=1", "train.progress=false", "train.picture_every=0"]


def test_training_skips_and_logs_or_stops_naming_the_file(tmp_path, bad_bytes, capsys):
    (tmp_path / "images").mkdir()
    images = folder_with(tmp_path / "images", bad_bytes)
    run = tmp_path / "run"
    argv = ["train", "mae_micro_fmnist", f"data.name={images}", *TRAIN, "--out", str(run)]
    assert main([*argv, "data.on_error=skip"]) == 0
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["skipped_images"] for r in rows] == ["6", "6"]  # one epoch per step: the same 6 distinct files
    assert sorted(Path(p).name for p in (run / "skipped_images.txt").read_text().split()) == sorted(BAD_FILES)
    assert "skipped 6 unreadable image file(s)" in capsys.readouterr().out
    fresh = tmp_path / "run2"
    assert main([*argv[:-1], str(fresh)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimkit: error: cannot read image ") and len(err.splitlines()) == 1
    assert not fresh.exists()  # a run that fails before its first checkpoint leaves no folder behind


# ----------------------------------------------------------------------- property-based tests

MODES = ["1", "L", "LA", "RGB", "RGBA", "P", "CMYK", "I;16"]


@st.composite
def constant_images(draw):
    """(PIL image of one colour, file suffix, its RGB by the documented rule, computed by hand)."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    byte = st.integers(0, 255)
    if mode == "1":
        v = draw(st.integers(0, 1))
        return Image.new("1", size, v), ".png", (float(v),) * 3
    if mode == "L":
        g = draw(byte)
        return Image.new("L", size, g), ".png", (g / 255,) * 3
    if mode == "LA":
        g, a = draw(byte), draw(byte)
        return Image.new("LA", size, (g, a)), ".png", (g / 255 * a / 255 + 1 - a / 255,) * 3
    if mode == "RGB":
        c = tuple(draw(byte) for _ in range(3))
        return Image.new("RGB", size, c), ".png", tuple(v / 255 for v in c)
    if mode == "RGBA":
        c, a = tuple(draw(byte) for _ in range(3)), draw(byte)
        return Image.new("RGBA", size, (*c, a)), ".png", tuple(v / 255 * a / 255 + 1 - a / 255 for v in c)
    if mode == "P":
        palette = [draw(byte) for _ in range(12)]
        index = draw(st.integers(0, 3))
        img = Image.new("P", size, index)
        img.putpalette(palette + [0] * (768 - 12))
        return img, ".png", tuple(v / 255 for v in palette[3 * index: 3 * index + 3])
    if mode == "CMYK":
        c, m, y, k = (draw(byte) for _ in range(4))
        rgb = tuple((1 - v / 255) * (1 - k / 255) for v in (c, m, y))
        return Image.new("CMYK", size, (c, m, y, k)), ".tif", rgb
    v = draw(st.integers(0, 65535))
    return Image.fromarray(np.full(size[::-1], v, np.uint16)), ".png", (v / 65535,) * 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=constant_images(), channels=st.sampled_from([1, 3]), out=st.integers(1, 9), min_side=st.integers(1, 4))
def test_any_mode_and_size_decodes_to_the_rule_or_is_refused_as_too_small(case, channels, out, min_side):
    img, suffix, rgb = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        img.save(path)
        if min(img.size) < min_side:
            with pytest.raises(UnusableImage, match="smaller than"):
                decode_image(path, channels, out, min_side=min_side)
            return
        got = decode_image(path, channels, out, min_side=min_side)
    expected = rgb if channels == 3 else (sum(w * c for w, c in zip(LUMA, rgb)),)
    tol = 1 / 255 + 1e-5 if img.mode == "CMYK" else 1e-5
    assert got.shape == (channels, out, out) and got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor(expected).view(-1, 1, 1).expand_as(got), atol=tol), (img.mode, got[:, 0, 0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(BAD_FILES) + ["good"] * 3), min_size=1, max_size=8))
def test_skip_drops_and_counts_exactly_the_unusable_files(bad_bytes, kinds):
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for i, kind in enumerate(kinds):
            name = f"{i:02d}_{kind}.png" if kind == "good" else f"{i:02d}_{kind}"
            data = png_bytes(Image.new("RGB", (5, 4), (i, 0, 0))) if kind == "good" else bad_bytes[kind]
            (Path(tmp) / name).write_bytes(data)
            names.append(name)
        ds = ImageFolder(tmp, channels=3, image_size=4, on_error="skip", min_side=2)
        loader = ResumableLoader(ds, batch_size=len(ds))  # one batch = one epoch
        bad = sorted(n for n, k in zip(names, kinds) if k != "good")
        if len(bad) == len(kinds):
            with pytest.raises(DataError, match="every image was skipped"):
                next(loader)
            return
        batch = next(loader)
    reds = sorted(batch["images"][:, 0, 0, 0].tolist())  # uint8 items
    assert reds == [i for i, k in enumerate(kinds) if k == "good"]
    assert loader.skipped_count == len(bad) and sorted(Path(p).name for p in loader.skipped_paths) == bad
