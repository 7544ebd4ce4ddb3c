"""Token cache: round trip against tokenizer.encode of each view, batched reads, reproducible view
draws, refusal of foreign / truncated / corrupted / incomplete caches, atomic writes, the CLI."""
import hashlib
import json
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mimkit.cli import main
from mimkit.data import InMemoryDataset
from mimkit.errors import DataError
from mimkit.tokenizers import TokenCacheDataset, Tokenizer, build_token_cache, tokenizer_fingerprint
from mimkit.tokenizers.cache import code_dtype
from mimkit.tokenizers.views import crop_resize, draw_crop_boxes

torch.set_num_threads(1)


class FakeTokenizer(nn.Module):
    """A fixed random 4x4 stride-4 conv + nearest-code lookup: (N, C, 8, 8) -> (N, 2, 2) codes."""

    def __init__(self, codebook_size: int = 300, in_chans: int = 1, seed: int = 0, fail_after: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_chans, 6, 4, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()
        self.register_buffer("codebook", torch.randn(codebook_size, 6, generator=g))
        self.config = SimpleNamespace(img_size=8, in_chans=in_chans)
        self.codebook_size, self.grid_size = codebook_size, (2, 2)
        self.fail_after, self.calls = fail_after, 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash mid-write")
        z = self.conv(images).permute(0, 2, 3, 1)  # (N, 2, 2, 6)
        return torch.cdist(z.reshape(-1, 6), self.codebook).argmin(-1).view(z.shape[:3])

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for value in self.state_dict().values():
            digest.update(value.numpy().tobytes())
        return digest.hexdigest()


def make_data(n: int = 10, seed: int = 0) -> InMemoryDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return InMemoryDataset(images, torch.arange(n) % 3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of 10 images x (identity, hflip, crop0), built in batches of 4 (a short last batch)."""
    tokenizer, data = FakeTokenizer(), make_data()
    out = build_token_cache(tokenizer, data, tmp_path_factory.mktemp("c") / "cache", crops=1, seed=5,
                            batch_size=4, progress=False, source="random")
    return out, tokenizer, data


def test_fake_tokenizer_fits_the_protocol():
    assert isinstance(FakeTokenizer(), Tokenizer)


def test_round_trip_equals_encode_of_each_view(cache):
    out, tokenizer, data = cache
    images = data.get_batch(torch.arange(len(data)))["images"]
    boxes = draw_crop_boxes(len(data), 1, seed=5)
    with torch.no_grad():
        expected = {"identity": tokenizer.encode(images), "hflip": tokenizer.encode(images.flip(-1)),
                    "crop0": tokenizer.encode(crop_resize(images, boxes[:, 0]))}
    assert not torch.equal(expected["identity"], expected["hflip"])  # the views differ, so the test can fail
    for name, codes in expected.items():
        ds = TokenCacheDataset(out, expected_fingerprint=tokenizer.fingerprint(), views=name)
        assert torch.equal(torch.stack([ds[i]["tokens"] for i in range(len(ds))]), codes)
        assert ds[0]["tokens"].dtype == torch.int64
    assert torch.equal(ds.labels, data.labels)
    assert np.load(out / "codes.npy", mmap_mode="r").dtype == np.uint16  # 300 codes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["views"] == ["identity", "hflip", "crop0"] and manifest["shape"] == [10, 3, 2, 2]
    assert manifest["source"] == "random" and manifest["labels"] == {"known": 10, "classes": 3}
    assert ds.grid_size == (2, 2) and ds.codebook_size == 300 and ds.num_views == 3


def test_code_dtype_is_the_smallest_that_holds_the_codebook():
    assert [code_dtype(n) for n in (256, 257, 65536, 65537)] == [np.uint8, np.uint16, np.uint16, np.int32]


def test_crop_of_whole_image_is_identity_or_mirror():
    images = torch.rand(3, 2, 8, 8)
    whole = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.float32)
    out = crop_resize(images, whole)
    assert torch.allclose(out[0], images[0], atol=1e-6) and torch.allclose(out[1], images[1].flip(-1), atol=1e-6)
    # right half stretched x2: output column j samples input x = 3.75 + j / 2 (half-pixel grid)
    half = crop_resize(images, torch.tensor([[0.5, 0, 0.5, 1, 0]] * 3))
    assert torch.allclose(half[..., 1:7:2], 0.75 * images[..., 4:7] + 0.25 * images[..., 5:8], atol=1e-6)
    assert torch.allclose(half[..., 0:8:2], 0.25 * images[..., 3:7] + 0.75 * images[..., 4:8], atol=1e-6)
    boxes = draw_crop_boxes(50, 2, seed=1)
    x0, y0, w, h, flip = boxes.unbind(-1)
    assert (x0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    assert ((w * h >= 0.8 - 1e-5) & (w * h <= 1 + 1e-5)).all() and 0 < flip.mean() < 1
    assert torch.equal(boxes, draw_crop_boxes(50, 2, seed=1))


def test_get_batch_equals_stacked_items(cache):
    out, _, _ = cache
    idx = torch.tensor([7, 0, 3, 3, 9])
    for view in (0, 1, 2):
        ds = TokenCacheDataset(out, views=view)
        batch = ds.get_batch(idx)
        assert torch.equal(batch["tokens"], torch.stack([ds[int(i)]["tokens"] for i in idx]))
        assert torch.equal(batch["labels"], torch.stack([ds[int(i)]["labels"] for i in idx]))


def test_random_views_are_reproducible_under_manual_seed(cache):
    out, _, _ = cache
    ds = TokenCacheDataset(out, views="random", verify=False)
    fixed = [TokenCacheDataset(out, views=k).get_batch(torch.arange(10))["tokens"] for k in range(3)]
    idx = torch.arange(10).repeat(4)
    torch.manual_seed(0)
    a = ds.get_batch(idx)["tokens"]
    torch.manual_seed(0)
    b = ds.get_batch(idx)["tokens"]
    assert torch.equal(a, b)
    which = [[k for k in range(3) if torch.equal(a[j], fixed[k][idx[j]])] for j in range(len(idx))]
    assert all(which) and len({w[0] for w in which}) == 3  # every item is one of its views, all views drawn
    torch.manual_seed(1)
    items = torch.stack([ds[i]["tokens"] for i in range(10)])
    torch.manual_seed(1)
    assert torch.equal(items, torch.stack([ds[i]["tokens"] for i in range(10)]))
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers re-open the memmap
    assert torch.equal(clone.get_batch(torch.arange(10))["labels"], ds.labels)


def copy_cache(src, dst):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def refused(pattern, *args, **kwargs) -> None:
    """TokenCacheDataset(*args, **kwargs) raises a one-line DataError matching `pattern`."""
    with pytest.raises(DataError, match=pattern) as info:
        TokenCacheDataset(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_foreign_truncated_corrupted_or_incomplete_cache_is_refused(cache, tmp_path):
    out, tokenizer, _ = cache
    other = FakeTokenizer(seed=1).fingerprint()
    refused(r"manifest.json: the cache was made by tokenizer .*mimkit tokenize", out, expected_fingerprint=other)

    truncated = copy_cache(out, tmp_path / "truncated")
    with open(truncated / "codes.npy", "r+b") as handle:
        handle.truncate(os.path.getsize(truncated / "codes.npy") - 8)
    refused(r"truncated/codes.npy has \d+ bytes .*truncated.*mimkit tokenize", truncated, verify=False)

    corrupted = copy_cache(out, tmp_path / "corrupted")
    raw = bytearray((corrupted / "codes.npy").read_bytes())
    raw[-3] ^= 0xFF
    (corrupted / "codes.npy").write_bytes(bytes(raw))
    refused(r"corrupted/codes.npy is corrupted .*sha256.*mimkit tokenize", corrupted)
    TokenCacheDataset(corrupted, verify=False)  # huge caches may skip the checksum

    incomplete = copy_cache(out, tmp_path / "incomplete")
    (incomplete / "manifest.json").unlink()
    refused(r"incomplete/manifest.json is missing.*mimkit tokenize", incomplete)
    refused(r"token cache .*nowhere does not exist", tmp_path / "nowhere")


def test_a_crash_mid_write_leaves_no_cache(tmp_path):
    target = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_token_cache(FakeTokenizer(fail_after=3), make_data(), target, batch_size=4, progress=False)
    assert os.listdir(tmp_path) == []  # neither the cache nor its temporary folder
    build_token_cache(FakeTokenizer(), make_data(), target, views=("identity",), progress=False)
    with pytest.raises(DataError, match="already exists"):
        build_token_cache(FakeTokenizer(), make_data(), target, progress=False)
    build_token_cache(FakeTokenizer(), make_data(), target, progress=False, overwrite=True)
    assert TokenCacheDataset(target).view_names == ["identity", "hflip"] and os.listdir(tmp_path) == ["cache"]


def test_fingerprint_of_a_module_without_one_tracks_its_weights():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


def save_tiny_checkpoint(run_dir, method: str, model_config) -> None:
    from mimkit.config import RunConfig, to_dict
    from mimkit.data.config import DataConfig
    from mimkit.engine.checkpoint import save_checkpoint
    from mimkit.registry import build_model

    torch.manual_seed(0)
    config = RunConfig(method=method, model=model_config, data=DataConfig(name="digits", image_size=8))
    save_checkpoint(run_dir, 1, build_model(method, model_config), to_dict(config))


def test_cli_tokenize_a_vqgan_checkpoint_and_refuse_an_mae_one(tmp_path, capsys):
    from mimkit.registry import load_model
    from mimkit.methods.mae import MAEConfig
    from mimkit.tokenizers.vqgan import VQGANConfig

    save_tiny_checkpoint(tmp_path / "vq", "vqgan", VQGANConfig(
        img_size=8, in_chans=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
        z_channels=8, norm_groups=4, codebook_size=16, code_dim=4, disc_channels=8, disc_layers=1))
    out = tmp_path / "digits_cache"
    assert main(["tokenize", str(tmp_path / "vq"), "--data", "digits", "--limit", "12", "--crops", "1",
                 "--no-progress", "--out", str(out)]) == 0
    said, line = capsys.readouterr().out.strip().splitlines()
    assert said.startswith("train data   digits train: 12 images (random subset of 12 of 1438, seed 0")
    assert line.startswith(f"wrote {out}: 12 images x 3 views (identity, hflip, crop0) of 4x4 codes from 16")
    model, _ = load_model(tmp_path / "vq")
    ds = TokenCacheDataset(out, expected_fingerprint=model.fingerprint(), views="hflip")
    from mimkit.data import build_dataset
    from mimkit.data.config import DataConfig

    digits = build_dataset(DataConfig(name="digits", image_size=8, limit=12), channels=1).get_batch(torch.arange(12))
    digits = digits["images"]
    assert torch.equal(ds.get_batch(torch.arange(12))["tokens"], model.encode(digits.flip(-1)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "digits:train" and manifest["dtype"] == "uint8"

    assert main(["tokenize", str(tmp_path / "vq"), "--data", "digits", "--out", str(out)]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err

    save_tiny_checkpoint(tmp_path / "mae", "mae", MAEConfig(
        img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2, decoder_embed_dim=8,
        decoder_depth=1, decoder_num_heads=2))
    assert main(["tokenize", str(tmp_path / "mae"), "--data", "digits", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "holds a 'mae' model, not a tokenizer (it has no encode())" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
