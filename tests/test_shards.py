"""Data at scale. WebDataset tar shards: brace patterns and folders, every sample exactly once per
epoch over (rank, worker) readers, a seeded shuffle buffer, resumable batches, `mimkit train` on
shards. Hugging Face datasets rows (a list of dicts stands in for a datasets.Dataset), a save_to_disk folder
read with its labels when the `datasets` package is installed, and the clear error without it."""
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mimkit.cli import main
from mimkit.data import build_dataset
from mimkit.data.config import DataConfig
from mimkit.data.hf_datasets import HFImageRows
from mimkit.data.loader import make_loader
from mimkit.data.shards import TarShards, expand_shards
from mimkit.errors import DataError


def write_shards(folder, shards=3, per_shard=10, side=8):
    """Shards shard-000.tar ... with samples {index:06d}.png (grey, pixel value = index) + .cls = index."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for s in range(shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tar:
            for _ in range(per_shard):
                png = io.BytesIO()
                Image.fromarray(np.full((side, side), index * 3 % 256, np.uint8)).save(png, format="PNG")
                for ext, data in ((".png", png.getvalue()), (".cls", str(index).encode())):
                    info = tarfile.TarInfo(f"{index:06d}{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                index += 1
    return folder


def labels_of(dataset, epoch=0) -> list[int]:
    dataset.set_epoch(epoch)
    return [int(item["labels"]) for item in dataset]


def test_brace_patterns_and_folders(tmp_path):
    folder = write_shards(tmp_path / "s")
    pattern = str(folder / "shard-{000..002}.tar")
    assert expand_shards(pattern) == [str(folder / f"shard-{i:03d}.tar") for i in range(3)]
    assert expand_shards(str(folder)) == expand_shards(pattern)
    with pytest.raises(DataError, match="1 of 4 shards do not exist"):
        expand_shards(str(folder / "shard-{000..003}.tar"))
    assert expand_shards(str(tmp_path)) is None  # no .tar at its top level


@pytest.mark.parametrize("shards,per_shard", [(4, 6), (3, 10)])  # whole shards per reader / every n-th sample
def test_each_epoch_covers_every_sample_once_over_ranks(tmp_path, shards, per_shard):
    files = expand_shards(str(write_shards(tmp_path / "s", shards, per_shard)))
    total = shards * per_shard
    ranks = [TarShards(files, 1, 8, seed=7, rank=r, world_size=4 if shards == 4 else 2, shuffle_buffer=5)
             for r in range(4 if shards == 4 else 2)]
    seen = [labels_of(d) for d in ranks]
    flat = [x for s in seen for x in s]
    assert sorted(flat) == list(range(total)), "every sample once, no rank overlap"
    assert all(seen), "every rank gets samples"
    assert seen == [labels_of(d) for d in ranks], "deterministic given (seed, epoch)"
    assert [labels_of(d, 1) for d in ranks] != seen, "another epoch, another order"
    assert any(s != sorted(s) for s in seen), "the buffer shuffles"


def test_workers_split_a_rank_share(tmp_path):
    files = expand_shards(str(write_shards(tmp_path / "s", 4, 5)))
    got = []
    for rank in range(2):
        ds = TarShards(files, 1, 8, rank=rank, world_size=2, shuffle_buffer=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        got += [int(item["labels"]) for item in loader]
    assert sorted(got) == list(range(20))


def test_decoded_pixels_and_resumed_batches(tmp_path):
    folder = write_shards(tmp_path / "s", 2, 9)
    ds = build_dataset(DataConfig(name=str(folder), image_size=8), channels=1)
    item = ds[4]
    assert int(item["labels"]) == 4 and torch.equal(item["images"], torch.full((1, 8, 8), 12, dtype=torch.uint8))
    run = make_loader(ds, 4, seed=3)
    first = [next(run)["labels"].tolist() for _ in range(7)]  # 18 samples -> 4 batches per epoch: into epoch 2
    state = run.state_dict()
    rest = [next(run)["labels"].tolist() for _ in range(3)]
    again = make_loader(build_dataset(DataConfig(name=str(folder), image_size=8), channels=1), 4, seed=3)
    again.load_state_dict(state)
    assert [next(again)["labels"].tolist() for _ in range(3)] == rest
    assert sorted(x for b in first[:4] for x in b) == sorted(set(x for b in first[:4] for x in b)), "no repeats"


def test_train_on_shards(tmp_path):
    folder = write_shards(tmp_path / "s", 2, 8)
    tiny = ["data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16", "model.depth=1",
            "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2",
            "train.batch_size=4", "train.steps=5", "train.log_every=1", "train.progress=false", "train.threads=1",
            "train.device=cpu"]
    pattern = str(folder / "shard-{000..001}.tar")
    assert main(["train", "mae_micro_fmnist", f"data.name={pattern}", *tiny, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step_00000005" / "model.safetensors").is_file()


def test_hf_rows_decode_like_files():
    rows = [{"img": Image.fromarray(np.full((6, 4, 3), 30 * i, np.uint8)), "label": i} for i in range(3)]
    ds = HFImageRows(rows, channels=1, image_size=4)
    item = ds[2]
    assert int(item["labels"]) == 2 and item["images"].shape == (1, 4, 4)
    torch.testing.assert_close(item["images"], torch.full((1, 4, 4), 60, dtype=torch.uint8))  # grey of flat RGB
    with pytest.raises(DataError, match="no image column"):
        HFImageRows([{"text": "x"}], 1, 4)


def hf_split(datasets, first: int, n: int):
    """A datasets.Dataset of n flat grey 6x6 images: row i has pixel value 20 (first + i), label (first + i) % 3."""
    values = [first + i for i in range(n)]
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(np.full((6, 6), 20 * v, np.uint8)) for v in values], "label": [v % 3 for v in values]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))


def test_hf_save_to_disk_folder_loads_its_rows_or_names_the_missing_package(tmp_path, capsys):
    try:
        import datasets
    except ImportError:  # the clear one-line error, from the library and from the command line
        message = (f"data.name=hf:{tmp_path} needs the Hugging Face `datasets` package, which is not installed; "
                   "pip install datasets, or export the images to a folder or tar shards")
        with pytest.raises(DataError) as info:
            build_dataset(DataConfig(name=f"hf:{tmp_path}", image_size=6), channels=1)
        assert str(info.value) == message
        assert main(["train", "mae_micro_fmnist", f"data.name=hf:{tmp_path}", "--out", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err == f"mimkit: error: {message}\n"
        assert not (tmp_path / "run").exists()
        return
    # with the package: a DatasetDict folder's train and test rows, in order, with their labels and pixels
    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": hf_split(datasets, 0, 7), "test": hf_split(datasets, 7, 5)}).save_to_disk(str(folder))
    for split, first, n in (("train", 0, 7), ("test", 7, 5)):
        rows = build_dataset(DataConfig(name=f"hf:{folder}", image_size=6, split=split), channels=1)
        assert len(rows) == n
        for i in range(n):
            item = rows[i]
            assert int(item["labels"]) == (first + i) % 3
            torch.testing.assert_close(item["images"], torch.full((1, 6, 6), 20 * (first + i) / 255))
    # a plain Dataset folder is one undivided set: all of it is train data, and it has no test split
    plain = tmp_path / "plain"
    hf_split(datasets, 0, 4).save_to_disk(str(plain))
    rows = build_dataset(DataConfig(name=f"hf:{plain}", image_size=6), channels=1)
    assert [int(rows[i]["labels"]) for i in range(len(rows))] == [0, 1, 2, 0]
    with pytest.raises(DataError, match="no separate test split"):
        build_dataset(DataConfig(name=f"hf:{plain}", image_size=6, split="test"), channels=1)
