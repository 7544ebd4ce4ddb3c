"""The papers' RandomResizedCrop on the original image: the box sampler follows torchvision's rule (area fraction and log aspect match a plain reference by a KS test, boxes reach the image's edges, the fallback is a centre crop), an image folder in training crops the full-resolution original, and the evaluation transform is resize-shorter-side + centre crop (the box on a 500x375 image by hand, and what evaluation reads use). Items are uint8: a folder's batches through the loader (0 or 1 worker, over two epochs) are PIL's crops of the seeded boxes as floats after `to_device_float`; JPEG draft decoding gives the full decode's picture; tar shards and HF rows of the same images crop exactly like the folder.

The reference rule below is written from torchvision's RandomResizedCrop.get_params, with numpy.
"""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.data import DataConfig, ImageFolder, build_augment, build_dataset
from mimkit.data.augment import identity, unaugmented
from mimkit.data.crops import center_crop_box, center_crop_resize, random_resized_crop_box

SCALE, RATIO = (0.2, 1.0), (3 / 4, 4 / 3)


def reference_boxes(width, height, count, seed, scale=SCALE, ratio=RATIO):
    """torchvision's rule, plainly: accepted (w, h) of the first successful try, else None."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        for _ in range(10):
            area = width * height * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                out.append((w, h))
                break
    return np.array(out, dtype=float)


def test_boxes_follow_torchvision_rule():
    from scipy.stats import ks_2samp

    width, height = 500, 375
    g = torch.Generator().manual_seed(0)
    ours = np.array([random_resized_crop_box(width, height, SCALE, RATIO, g) for _ in range(4000)], dtype=float)
    ref = reference_boxes(width, height, 4000, seed=1)
    for a, b in ((ours[:, 2] * ours[:, 3] / (width * height), ref[:, 0] * ref[:, 1] / (width * height)),
                 (np.log(ours[:, 2] / ours[:, 3]), np.log(ref[:, 0] / ref[:, 1]))):
        assert ks_2samp(a, b).pvalue > 0.01
    left, top, w, h = ours.T
    assert (left >= 0).all() and (top >= 0).all() and (left + w <= width).all() and (top + h <= height).all()
    assert (left == 0).any() and (left + w == width).any()  # the whole image, not only its centre square
    assert (top == 0).any() and (top + h == height).any()


def test_same_generator_seed_same_boxes():
    draw = lambda: [random_resized_crop_box(64, 48, SCALE, RATIO, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert draw() == draw()


def test_fallback_is_centre_crop():
    # scale above what fits a very wide image: every try fails, torchvision clamps the aspect
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop_box(400, 50, (1.0, 1.0), RATIO, g) == ((400 - 67) // 2, 0, 67, 50)
    assert random_resized_crop_box(50, 400, (1.0, 1.0), RATIO, g) == (0, (400 - 67) // 2, 50, 67)


def test_center_crop_box():
    assert center_crop_box(500, 375, 0.875) == ((500 - 328) // 2, (375 - 328) // 2, 328, 328)
    assert center_crop_box(100, 100, 1.0) == (0, 0, 100, 100)


def test_evaluation_transform_by_hand():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8))
    size = 224
    short = int(size / 0.875)  # 256
    resized = img.resize((int(short * 500 / 375), short), Image.BICUBIC)  # 341 x 256
    left, top = int(round((resized.size[0] - size) / 2)), int(round((resized.size[1] - size) / 2))
    expected = resized.crop((left, top, left + size, top + size))
    got = center_crop_resize(img, size, 0.875)
    assert got.size == (size, size)
    assert np.array_equal(np.asarray(got), np.asarray(expected))


@pytest.fixture
def wide_folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    return tmp_path


def test_folder_training_item_is_a_random_crop(wide_folder):
    torch.manual_seed(0)
    ds = ImageFolder(wide_folder, channels=3, image_size=32, augment=True)
    assert ds.augments_itself
    for index in range(2):
        a = ds[index]["images"]
        ds.set_epoch(1)
        b = ds[index]["images"]
        ds.set_epoch(0)
        assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
        assert not torch.equal(a, b)  # another epoch, another crop
    two = ImageFolder(wide_folder, channels=1, image_size=16, augment=True, views=2)[1]
    assert two["images"].shape == two["images_2"].shape == (1, 16, 16)
    with unaugmented(ds):
        plain = ds[1]["images"]
        assert torch.equal(plain, ds[1]["images"])
    assert ds.augments_itself


def test_folder_crops_depend_on_seed_epoch_and_index_only(wide_folder):
    """Item i's crop in epoch e is fixed by (run seed, e, i): the same in any worker, on any rank and
    after a resume; the global RNG plays no part."""
    ds = ImageFolder(wide_folder, channels=3, image_size=16, augment=True)
    ds.seed, ds.epoch = 5, 2
    torch.manual_seed(0)
    first = ds[0]["images"]
    torch.manual_seed(1)
    assert torch.equal(first, ds[0]["images"])
    ds.seed = 6
    assert not torch.equal(first, ds[0]["images"])


def test_folder_training_resumes_exactly(tmp_path):
    """A folder run (self-augmenting items) stopped after step 3 and resumed gives exactly the losses
    of the uninterrupted 6-step run."""
    import csv

    from mimkit.config import load_config
    from mimkit.engine.trainer import Trainer
    from mimkit.registry import build_model
    from mimkit.train import measure_pixel_statistics

    rng = np.random.default_rng(1)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    settings = [f"data.name={tmp_path}", "data.image_size=8", "model.img_size=8", "model.patch_size=2",
                "train.batch_size=8", "train.steps=6", "train.progress=false", "train.picture_every=0",
                "train.log_every=1", "train.ckpt_every=3"]

    def trainer(out):
        config = load_config("mae_micro_fmnist", [*settings, f"train.out_dir={out}"])
        data = build_dataset(config.data, channels=1, training=True)
        config = measure_pixel_statistics(config, ImageFolder(tmp_path, 1, 8))
        torch.manual_seed(config.train.seed)
        return Trainer(build_model(config.method, config.model), config, data, augment=build_augment(config.data, data))

    def losses(run):
        with open(run / "log.csv") as handle:
            return [float(r["loss"]) for r in csv.DictReader(handle)]

    trainer(tmp_path / "full").fit()
    trainer(tmp_path / "part").fit(stop_at=3)
    trainer(tmp_path / "part").fit(resume=True)
    assert len(losses(tmp_path / "full")) == 6 and losses(tmp_path / "full") == losses(tmp_path / "part")


def test_training_folder_skips_batched_augment(wide_folder):
    cfg = DataConfig(name=str(wide_folder), image_size=16)
    trained = build_dataset(cfg, channels=3, training=True)
    assert trained.augments_itself and build_augment(cfg, trained) is None  # the Trainer leaves its items alone
    plain = build_dataset(cfg, channels=3)
    assert not plain.augments_itself and build_augment(cfg, plain) is not identity
    off = build_dataset(DataConfig(name=str(wide_folder), image_size=16, augment=False), channels=3, training=True)
    assert not off.augments_itself


def test_trainer_keeps_the_second_view_a_folder_draws(wide_folder, tmp_path):
    """MAGE-C on a folder: the item's own second crop reaches the model, not a copy of the first."""
    from mimkit.config import load_config
    from mimkit.engine.trainer import Trainer
    from mimkit.registry import build_model

    config = load_config("mae_micro_fmnist", [f"data.name={wide_folder}", "data.image_size=8", "model.img_size=8",
                                              "model.patch_size=2", "model.in_chans=3", "data.views=2",
                                              "train.batch_size=2", f"train.out_dir={tmp_path / 'run'}"])
    data = build_dataset(config.data, channels=3, training=True)
    batch = Trainer(build_model(config.method, config.model), config, data,
                    augment=build_augment(config.data, data)).next_batch()
    assert batch["images"].shape == batch["images_2"].shape == (2, 3, 8, 8)
    assert not torch.equal(batch["images"], batch["images_2"])


# ------------------------------------------------ uint8 items, the evaluation view, shards and HF rows alike

def reference_crop(path, box, size, mirror):
    """torchvision's RandomResizedCrop on a PIL image, plainly: crop the box, PIL's bicubic resize, mirror."""
    left, top, w, h = box
    img = Image.open(path).convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)
    array = np.asarray(img.transpose(Image.FLIP_LEFT_RIGHT) if mirror else img)
    return torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)


def expected_training_crop(path, size, seed, epoch, index):
    """The crop of item `index` in `epoch`: box then flip drawn from the generator seeded (seed, epoch, index)."""
    from mimkit.data.image_items import item_seed

    g = torch.Generator().manual_seed(item_seed(seed, epoch, index))
    width, height = Image.open(path).size
    box = random_resized_crop_box(width, height, SCALE, RATIO, g)
    return reference_crop(path, box, size, torch.rand(1, generator=g).item() < 0.5)


@pytest.fixture
def png_folder(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (60 + 7 * i, 90, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def same_pixels(got, expected):
    """Equal up to two steps of 1/255 anywhere (torch's uint8 bicubic and PIL's round their fixed-point
    sums differently) and a mean difference far below one step (no shift, no other filter)."""
    diff = (got - expected).abs()
    return diff.max().item() <= 2 / 255 + 1e-6 and diff.mean().item() < 0.05 / 255


@pytest.mark.parametrize("num_workers", [0, 1])
def test_folder_batches_are_the_pil_crops_as_floats(png_folder, num_workers):
    """uint8 items through the loader (workers living across epochs) and to_device_float give the
    floats of PIL's crop + bicubic resize of the boxes drawn from (seed, epoch, index)."""
    from mimkit.data.device_batch import to_device_float
    from mimkit.data.loader import make_loader
    from mimkit.data.permutation import epoch_permutation

    ds = ImageFolder(png_folder, channels=3, image_size=24, augment=True)
    loader = make_loader(ds, batch_size=3, seed=11, num_workers=num_workers)
    for epoch in range(2):
        order = epoch_permutation(len(ds), 11, epoch).tolist()
        for b in range(2):
            raw = next(loader)
            assert raw["images"].dtype == torch.uint8
            batch = to_device_float(raw, "cpu")
            expected = torch.stack([expected_training_crop(ds.files[i], 24, 11, epoch, i)
                                    for i in order[3 * b:3 * b + 3]])
            assert batch["images"].dtype == torch.float32 and same_pixels(batch["images"], expected)


def test_evaluation_view_box_by_hand(tmp_path):
    """500 x 375, S = 224, crop_pct 0.875: side round(0.875 * 375) = 328, left (500 - 328) // 2 = 86,
    top (375 - 328) // 2 = 23 - the pixels "shorter side to 256, centre 224" keeps."""
    rng = np.random.default_rng(4)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    smooth.save(tmp_path / "a.png")
    assert center_crop_box(500, 375) == (86, 23, 328, 328)
    item = ImageFolder(tmp_path, channels=3, image_size=224)[0]["images"]  # not augmented: the evaluation view
    expected = reference_crop(tmp_path / "a.png", (86, 23, 328, 328), 224, False)
    assert item.dtype == torch.uint8 and same_pixels(item.float() / 255, expected)
    # the same pixels as resize-shorter-side + centre crop, up to the sub-pixel offset of the integer box
    resized = torch.from_numpy(np.asarray(center_crop_resize(smooth, 224)).astype(np.float32) / 255).permute(2, 0, 1)
    assert (expected - resized).abs().mean() < 0.01


def test_evaluation_reads_use_the_evaluation_view(tmp_path):
    """What commands read (eval_dataset: probes, reconstruct, tokenize, ...) is the evaluation view."""
    from mimkit.config import load_config
    from mimkit.data.evaluation_data import EvalSources, eval_dataset, random_readable_items

    rng = np.random.default_rng(5)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    config = load_config("mae_micro_fmnist", [f"data.name={tmp_path}", "data.image_size=16", "model.img_size=16",
                                              "model.in_chans=3"])
    data = eval_dataset(config, "train", EvalSources())
    assert not data.augments_itself
    side = round(0.875 * 30)  # 26: left (40 - 26) // 2 = 7, top (30 - 26) // 2 = 2
    expected = reference_crop(data.files[0], ((40 - side) // 2, (30 - side) // 2, side, side), 16, False)
    assert same_pixels(data[0]["images"].float() / 255, expected)
    items = random_readable_items(data, 2, seed=0)  # what reconstruct / inpaint draw: float already
    assert all(item["images"].dtype == torch.float32 for item in items)


def test_jpeg_crops_decode_at_draft_scale(tmp_path):
    """A JPEG crop much larger than S is decoded at 1/2..1/8 scale: the same picture as the full
    decode within JPEG's error, on training crops and evaluation views alike."""
    rng = np.random.default_rng(6)
    smooth = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).resize((1000, 800), Image.BICUBIC)
    smooth.save(tmp_path / "a.jpg", quality=95)
    ds = ImageFolder(tmp_path, channels=3, image_size=32)
    full = reference_crop(tmp_path / "a.jpg", center_crop_box(1000, 800), 32, False)
    assert (ds[0]["images"].float() / 255 - full).abs().mean() < 0.01
    ds.augment = True
    assert (ds[0]["images"].float() / 255 - expected_training_crop(ds.files[0], 32, 0, 0, 0)).abs().mean() < 0.01


def test_shards_and_hf_rows_crop_like_the_folder(png_folder, tmp_path):
    """The same images as a folder, a tar shard and HF rows: the same uint8 crops for the same
    (seed, epoch, index), training and evaluation alike."""
    import io
    import tarfile

    from mimkit.data.hf_datasets import HFImageRows
    from mimkit.data.shards import TarShards

    folder = ImageFolder(png_folder, channels=3, image_size=16, augment=True, views=2)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i, path in enumerate(folder.files):
            data = open(path, "rb").read()
            info = tarfile.TarInfo(f"{i:04d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shards = TarShards([str(tmp_path / "s.tar")], 3, 16, shuffle_buffer=1, augment=True, views=2)
    rows = HFImageRows([{"image": Image.open(p)} for p in folder.files], 3, 16, augment=True, views=2)
    for ds in (folder, shards, rows):
        ds.seed = 9
        ds.set_epoch(2)
    streamed = list(shards)  # buffer 1, one shard: file order
    for i in range(len(folder)):
        mine, row, read = folder[i], rows[i], shards[i]
        for key in ("images", "images_2"):
            assert torch.equal(mine[key], streamed[i][key]) and torch.equal(mine[key], row[key])
            assert torch.equal(mine[key], read[key])
    for ds in (folder, shards, rows):
        ds.augment = False
    assert torch.equal(folder[3]["images"], shards[3]["images"]) and torch.equal(folder[3]["images"], rows[3]["images"])
