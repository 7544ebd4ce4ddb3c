"""mimkit.data: sources, mode conversion, skip handling, augmentation and the resumable loader."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from mimkit.config import from_dict
from mimkit.data import (FASHION_MNIST_ROOT, BatchAugment, DataConfig, ImageFolder, InMemoryDataset,
                         ResumableLoader, build_augment, build_dataset, decode_image, fit_square, load_array_file,
                         load_idx_images, read_idx)
from mimkit.errors import ConfigError, DataError


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, dtype: str = ">u1") -> None:
    """Hand-written IDX encoder (header: 0 0 code ndim, big-endian dims, big-endian values)."""
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


# ---------------------------------------------------------------------------------------------- IDX

def test_idx_round_trip_gz_images_plain_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "toy-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "toy-labels-idx1-ubyte", labels)
    x, y = load_idx_images(tmp_path / "toy-images-idx3-ubyte.gz")
    assert x.dtype == torch.uint8 and x.shape == (5, 1, 4, 6)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert y.tolist() == [3, 1, 4, 1, 5]
    # through the factory: 4x6 -> centre 4x4 square (columns 1..4), no resize needed
    ds = build_dataset(DataConfig(name=str(tmp_path / "toy-images-idx3-ubyte.gz"), image_size=4), channels=1)
    assert torch.allclose(ds[2]["images"][0], torch.from_numpy(images[2, :, 1:5]).float() / 255)
    assert ds[2]["labels"].item() == 4 and ds[2]["labels"].dtype == torch.int64


def test_idx_big_endian_int16_and_missing_labels(tmp_path):
    values = np.array([[-300, 2], [1000, -1]], dtype=np.int16)
    write_idx(tmp_path / "v.idx", values, code=0x0B, dtype=">i2")
    assert read_idx(tmp_path / "v.idx").tolist() == values.tolist()
    write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    assert load_idx_images(tmp_path / "a-images-idx3-ubyte")[1] is None


@pytest.mark.parametrize("cut", [1, 20])
def test_idx_truncated_names_file(tmp_path, cut):
    path = tmp_path / "cut-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match=r"cut-images-idx3-ubyte is truncated"):
        read_idx(path)


def test_idx_bad_magic_and_label_count(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="junk is not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "b-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "b-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="b-labels-idx1-ubyte: labels must be 3 integers"):
        load_idx_images(tmp_path / "b-images-idx3-ubyte")


# -------------------------------------------------------------------------------------------- arrays

BASE = np.arange(2 * 3 * 5 * 6, dtype=np.uint8).reshape(2, 3, 5, 6)  # (N, C, H, W)


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "float"])
def test_array_layouts(tmp_path, layout):
    if layout == "NHW":
        array, expected = BASE[:, 0], BASE[:, :1]
    elif layout == "NHWC":
        array, expected = BASE.transpose(0, 2, 3, 1), BASE
    elif layout == "NCHW":
        array, expected = BASE, BASE
    else:
        array, expected = BASE.astype(np.float64) / 255, BASE
    np.save(tmp_path / "a.npy", array)
    images, labels = load_array_file(tmp_path / "a.npy")
    assert labels is None and torch.equal(images, torch.from_numpy(expected))
    np.savez(tmp_path / "a.npz", x=array, y=np.array([7, 8]))
    images, labels = load_array_file(tmp_path / "a.npz")
    assert torch.equal(images, torch.from_numpy(expected)) and labels.tolist() == [7, 8]


def test_array_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 16), np.uint8))
    with pytest.raises(DataError, match=r"flat.npy: images must have shape .* got \(4, 16\)"):
        load_array_file(tmp_path / "flat.npy")
    np.savez(tmp_path / "keys.npz", pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"keys.npz: no images array; expected key 'images' or 'x', found \['pixels'\]"):
        load_array_file(tmp_path / "keys.npz")
    np.save(tmp_path / "range.npy", np.full((2, 4, 4), 3.0))
    with pytest.raises(DataError, match="range.npy: float64 images with values in"):
        load_array_file(tmp_path / "range.npy")
    np.savez(tmp_path / "lab.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"lab.npz\[labels\]: labels must be 2 integers"):
        load_array_file(tmp_path / "lab.npz")
    np.save(tmp_path / "amb.npy", np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(DataError, match="cannot tell the channel axis"):
        load_array_file(tmp_path / "amb.npy")


def test_in_memory_resize_channels_and_get_batch():
    # 2x2 checkerboard upsampled to 4x4 stays a (blurred) checkerboard with the right means
    grey = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8).expand(3, 1, 2, 2)
    ds = InMemoryDataset(grey, torch.tensor([0, 1, 2]), image_size=4, channels=3)
    assert ds.images.shape == (3, 3, 4, 4) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grey repeated
    assert ds.images[0, 0, 0, 0] < 60 and ds.images[0, 0, 0, 3] > 195
    batch = ds.get_batch(torch.tensor([2, 0]))
    assert batch["images"].dtype == torch.float32 and batch["labels"].tolist() == [2, 0]
    assert torch.equal(batch["images"][1], ds[0]["images"])
    unlabelled = InMemoryDataset(grey)
    assert unlabelled.images is grey and unlabelled[1]["labels"].item() == -1


def test_fit_square_centre_crop():
    image = torch.arange(4.0).div(3).expand(1, 1, 2, 4)  # columns 0, 1/3, 2/3, 1
    assert torch.allclose(fit_square(image, 2), image[..., 1:3])
    assert fit_square(image.transpose(-1, -2), 2).shape == (1, 1, 2, 2)


# ----------------------------------------------------------------------------------- image decoding

def save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def palette_image(transparent: bool) -> Image.Image:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)  # 0 = blue, 1 = red
    if transparent:
        img.info["transparency"] = 1
    return img


RED_LUMA = 0.299
HALF = 127 / 255  # 1 - alpha for alpha = 128/255, i.e. the white showing through
CASES = {  # name: (image, file suffix, expected RGB, expected grey)
    "L": (Image.new("L", (4, 4), 51), ".png", (0.2, 0.2, 0.2), 0.2),
    "1": (Image.new("1", (4, 4), 1), ".png", (1.0, 1.0, 1.0), 1.0),
    "RGB": (Image.new("RGB", (4, 4), (255, 0, 0)), ".png", (1.0, 0.0, 0.0), RED_LUMA),
    "RGBA": (Image.new("RGBA", (4, 4), (255, 0, 0, 128)), ".png", (1.0, HALF, HALF), RED_LUMA + 0.701 * HALF),
    "LA": (Image.new("LA", (4, 4), (0, 0)), ".png", (1.0, 1.0, 1.0), 1.0),
    "P": (palette_image(False), ".png", (1.0, 0.0, 0.0), RED_LUMA),
    "P-transparent": (palette_image(True), ".png", (1.0, 1.0, 1.0), 1.0),
    "I;16": (Image.fromarray(np.full((4, 4), 16384, np.uint16)), ".png", (16384 / 65535,) * 3, 16384 / 65535),
    "CMYK": (Image.new("CMYK", (4, 4), (255, 0, 0, 0)), ".tif", (0.0, 1.0, 1.0), 0.701),
    "CMYK-K": (Image.new("CMYK", (4, 4), (0, 0, 0, 128)), ".tif", (HALF,) * 3, HALF),
    "F": (Image.new("F", (4, 4), 0.25), ".tif", (0.25,) * 3, 0.25),
}


@pytest.mark.parametrize("name", list(CASES))
def test_modes_to_1_and_3_channels(tmp_path, name):
    img, suffix, rgb, grey = CASES[name]
    path = save(img, tmp_path / f"img{suffix}")
    three = decode_image(path, 3, 4)
    assert three.shape == (3, 4, 4) and three.dtype == torch.float32
    assert torch.allclose(three, torch.tensor(rgb).view(3, 1, 1).expand(3, 4, 4), atol=1e-6), three[:, 0, 0]
    one = decode_image(path, 1, 4)
    assert one.shape == (1, 4, 4)
    assert torch.allclose(one, torch.full((1, 4, 4), grey), atol=1e-6), one[0, 0, 0]


def test_decode_resizes_to_square(tmp_path):
    path = save(Image.new("RGB", (40, 20), (0, 255, 0)), tmp_path / "wide.jpg")
    out = decode_image(path, 3, 8)
    assert out.shape == (3, 8, 8) and out[1].mean() > 0.95 and out[0].mean() < 0.05


# ------------------------------------------------------------------------------------------ folders

def make_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (6, 6), value).save(path)


def test_folder_with_class_subfolders(tmp_path):
    make_png(tmp_path / "dog" / "b.png", 10)
    make_png(tmp_path / "cat" / "x" / "a.PNG", 20)  # deeper still belongs to "cat"
    make_png(tmp_path / "dog" / "c.png", 30)
    make_png(tmp_path / "dog" / "._c.png", 40)  # macOS resource fork: ignored
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, channels=3, image_size=4)
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert [ds[i]["labels"].item() for i in range(3)] == [0, 1, 1]
    assert ds[0]["images"].shape == (3, 4, 4)
    assert torch.equal(ds[0]["images"], torch.full((3, 4, 4), 20, dtype=torch.uint8))  # uint8 items
    assert len(build_dataset(DataConfig(name=str(tmp_path), image_size=4, limit=2), channels=1)) == 2


def test_flat_folder_is_unlabelled(tmp_path):
    make_png(tmp_path / "a.png", 0)
    make_png(tmp_path / "sub" / "b.png", 0)  # an image at the top level makes the folder unlabelled
    ds = ImageFolder(tmp_path, channels=1, image_size=6)
    assert ds.classes is None and len(ds) == 2
    assert [ds[i]["labels"].item() for i in range(2)] == [-1, -1]


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(tmp_path, channels=1, image_size=4)


@pytest.fixture
def folder_with_bad_files(tmp_path):
    make_png(tmp_path / "a.png", 255)
    make_png(tmp_path / "d.png", 255)
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "c.jpg").write_text("this is not an image")
    return tmp_path


@pytest.mark.parametrize("bad", ["b.png", "c.jpg"])
def test_bad_file_raises_naming_it(folder_with_bad_files, bad):
    ds = ImageFolder(folder_with_bad_files, channels=1, image_size=4)
    with pytest.raises(DataError, match=rf"cannot read image .*{bad}: .*on_error=skip"):
        ds[ds.files.index(str(folder_with_bad_files / bad))]


def test_all_skipped_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    loader = ResumableLoader(ImageFolder(tmp_path, 1, 4, on_error="skip"), batch_size=1)
    with pytest.raises(DataError, match="every image was skipped"):
        next(loader)


def test_truncated_png_raises(tmp_path):
    make_png(tmp_path / "t.png", 7)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.png"):
        ImageFolder(tmp_path, channels=1, image_size=4)[0]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_bad_files_skipped_and_counted(folder_with_bad_files, num_workers):
    ds = ImageFolder(folder_with_bad_files, channels=1, image_size=4, on_error="skip")
    loader = ResumableLoader(ds, batch_size=4, seed=0, num_workers=num_workers)
    batch = next(loader)
    assert batch["images"].shape == (2, 1, 4, 4) and torch.equal(batch["images"], torch.full((2, 1, 4, 4), 255,
                                                                                             dtype=torch.uint8))
    assert loader.skipped_count == 2
    assert sorted(Path(p).name for p in loader.skipped_paths) == ["b.png", "c.jpg"]
    next(loader)  # the next epoch meets them again: counted again, listed once
    assert loader.skipped_count == 4 and len(loader.skipped_paths) == 2


# --------------------------------------------------------------------------------------- built-ins

def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    where = rf"looked for train-images-idx3-ubyte.*in {tmp_path}"
    with pytest.raises(DataError, match=rf"{where}.*apt-get install dataset-fashion-mnist.*data.root=DIR"):
        build_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)), channels=1)


def test_fashion_mnist_accepts_plain_files(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((2, 28, 28), 255, np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([4, 2], np.uint8))
    ds = build_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), split="test"), channels=1)
    assert len(ds) == 2 and ds.labels.tolist() == [4, 2] and ds.classes[4] == "Coat"


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_real():
    test = build_dataset(DataConfig(name="fashion-mnist"), channels=1, split="test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # limit: a seeded subset with one image of each of the 10 classes (the first 10 images hold 6)
    train = build_dataset(DataConfig(name="fashion-mnist", limit=10, image_size=14, convert_channels=True), channels=3)
    assert train.images.shape == (10, 3, 14, 14) and train.total == 60000
    assert sorted(train.labels.tolist()) == list(range(10))
    again = build_dataset(DataConfig(name="fashion-mnist", limit=10, image_size=14, convert_channels=True), channels=3)
    other = build_dataset(DataConfig(name="fashion-mnist", limit=10, image_size=14, convert_channels=True,
                                     limit_seed=1), channels=3)
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)


def test_digits_split_and_values():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train = build_dataset(DataConfig(name="digits", image_size=8), channels=1)
    test = build_dataset(DataConfig(name="digits", image_size=8), channels=1, split="test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.images.shape == (1438, 1, 8, 8)
    assert torch.equal(test.labels, torch.from_numpy(ref.target[-359:]).long())
    expected = torch.from_numpy(ref.images[-1]).float() / 16  # 0..16 -> [0, 1]
    assert torch.allclose(test[358]["images"][0], expected, atol=0.5 / 255)


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(DataError, match="fashion-mnist, digits, or a path"):
        build_dataset(DataConfig(name=str(tmp_path / "nope")), channels=1)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="cannot tell what the file holds"):
        build_dataset(DataConfig(name=str(tmp_path / "x.csv")), channels=1)


def test_config_checks_values():
    with pytest.raises(ConfigError, match="data.on_error must be raise or skip"):
        from_dict(DataConfig, {"on_error": "ignore"}, "data")
    with pytest.raises(ConfigError, match="data.crop_scale"):
        from_dict(DataConfig, {"crop_scale": [0.5, 0.2]}, "data")


# ------------------------------------------------------------------------------------- augmentation

def test_augment_identity_and_flip():
    x = torch.rand(4, 3, 16, 16)
    still = BatchAugment(16, scale=(1, 1), ratio=(1, 1), hflip_p=0.0)
    assert torch.allclose(still(x), x, atol=1e-6)
    flip = BatchAugment(16, scale=(1, 1), ratio=(1, 1), hflip_p=1.0)
    assert torch.allclose(flip(x), torch.flip(x, dims=[-1]), atol=1e-6)
    assert build_augment(DataConfig(augment=False))(x) is x


def test_augment_reproducible_from_global_rng():
    x = torch.rand(8, 1, 28, 28)
    aug = build_augment(DataConfig(image_size=20))
    torch.manual_seed(3)
    first = aug(x)
    state = torch.get_rng_state()
    second = aug(x)
    torch.manual_seed(3)
    assert torch.equal(aug(x), first)
    torch.set_rng_state(state)
    assert torch.equal(aug(x), second)
    assert first.shape == (8, 1, 20, 20) and not torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1  # bicubic overshoot on noise is clamped


# ------------------------------------------------------------------------------------------- loader

class NoFastPath(Dataset):
    """Hides get_batch so the loader takes the DataLoader path."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def numbered(n: int) -> InMemoryDataset:
    return InMemoryDataset(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [2, 3, 4])  # 3 batches per epoch: resume mid-epoch and at the boundary
def test_loader_resume_matches_uninterrupted(fast, k):
    data = numbered(10) if fast else NoFastPath(numbered(10))
    ref = ResumableLoader(data, batch_size=3, seed=5)
    run = [next(ref)["labels"].tolist() for _ in range(8)]
    first = ResumableLoader(data, batch_size=3, seed=5)
    for _ in range(k):
        next(first)
    resumed = ResumableLoader(data, batch_size=3, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert [next(resumed)["labels"].tolist() for _ in range(8 - k)] == run[k:]


def test_loader_epochs_are_permutations_and_leave_global_rng():
    rng = torch.get_rng_state()
    loader = ResumableLoader(numbered(10), batch_size=5, seed=1)
    epoch0 = sum((next(loader)["labels"].tolist() for _ in range(2)), [])
    epoch1 = sum((next(loader)["labels"].tolist() for _ in range(2)), [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    assert loader.state_dict() == {"epoch": 2, "position": 0}
    assert torch.equal(torch.get_rng_state(), rng)


def test_loader_short_last_batch():
    loader = ResumableLoader(numbered(7), batch_size=3, seed=0, drop_last=False)
    assert [len(next(loader)["labels"]) for _ in range(4)] == [3, 3, 1, 3]


def test_two_ranks_partition_an_epoch():
    data = numbered(11)
    ranks = [ResumableLoader(data, batch_size=2, seed=7, rank=r, world_size=2) for r in range(2)]
    seen = [sum((next(loader)["labels"].tolist() for _ in range(loader.batches_per_epoch)), []) for loader in ranks]
    assert len(seen[0]) == len(seen[1]) == 4  # 11 -> 10 shared -> 5 per rank -> 2 full batches each
    assert not set(seen[0]) & set(seen[1])
    full = ResumableLoader(data, batch_size=10, seed=7)
    order = next(full)["labels"].tolist()  # the same epoch-0 permutation, unsharded
    assert seen[0] == order[0:8:2] and seen[1] == order[1:9:2]


def test_loader_too_small_dataset():
    with pytest.raises(DataError, match="too few for one batch of 8"):
        ResumableLoader(numbered(5), batch_size=8)


# ------------------------------------------------------------------------------ uint8 -> float, once

def test_to_device_float_divides_uint8_images_only():
    from mimkit.data.device_batch import to_device_float

    batch = {"images": torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8), "labels": torch.tensor([3]),
             "images_2": torch.tensor([[[[255]]]], dtype=torch.uint8)}
    out = to_device_float(batch, "cpu")
    assert out["images"].dtype == torch.float32
    assert out["images"].flatten().tolist() == pytest.approx([0.0, 0.2, 1.0], abs=1e-7)
    assert out["images_2"].item() == 1.0 and out["labels"].dtype == torch.long and out["labels"].item() == 3
    assert batch["images"].dtype == torch.uint8  # the input is left alone
    floats = {"images": torch.tensor([0.25])}
    assert to_device_float(floats)["images"] is floats["images"]  # float images pass unchanged


def test_folder_pixel_statistics_are_of_floats(tmp_path):
    """Pixel statistics of a folder's uint8 items are measured in [0, 1], not 0..255."""
    from mimkit.data.statistics import pixel_statistics_of

    make_png(tmp_path / "a.png", 51)
    make_png(tmp_path / "b.png", 153)
    mean, std, count = pixel_statistics_of(ImageFolder(tmp_path, channels=1, image_size=4))
    # values 0.2 and 0.6, 16 of each: sample std sqrt(32 * 0.2 ** 2 / 31) = 0.2032
    assert count == 2 and mean == (0.4,) and std == (0.2032,)
