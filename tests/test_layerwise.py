"""Layer-wise linear probes: the captured block outputs against a forward written out by hand, the last
block against features(), BEiT v2's biased blocks, unsupported models, and the CLI."""
import pytest
import torch
from torch import nn

from mimkit.cli import main
from mimkit.config import RunConfig, to_dict
from mimkit.data.config import DataConfig
from mimkit.data.memory import InMemoryDataset
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.errors import MimkitError
from mimkit.eval.features import extract_features
from mimkit.eval.layerwise import block_features, layerwise_probe
from mimkit.eval.linprobe import linear_probe
from mimkit.methods.beitv2 import BEiTv2, BEiTv2Config
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.revcolv2 import RevColV2, RevColV2Config

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENIZER = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}


def tiny_mae(**kw) -> MAE:
    torch.manual_seed(0)
    return MAE(MAEConfig(**({"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 3,
                             "num_heads": 2, "decoder_embed_dim": 8, "decoder_depth": 1, "decoder_num_heads": 2,
                             "pixel_mean": (0.5,), "pixel_std": (0.3,)} | kw)))


def image_set(n: int, seed: int) -> InMemoryDataset:
    """Random 8x8 images whose label is the brighter half (top 0 / bottom 1)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    labels = torch.arange(n) % 2
    images[labels == 0, :, :4] += 0.5
    images[labels == 1, :, 4:] += 0.5
    return InMemoryDataset((images.clamp(0, 1) * 255).round().to(torch.uint8), labels)


def manual_block_outputs(model: MAE, images: torch.Tensor) -> list[torch.Tensor]:
    """[cls + pos; patch embeddings + pos] and the output of every block, written out: (N, 1 + L, D) each."""
    x = model.patch_embed(model.normalize(images)) + model.pos_embed[:, 1:]
    h = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(len(x), -1, -1), x], dim=1)
    outputs = [h]
    for block in model.blocks:
        h = block(h)
        outputs.append(h)
    return outputs


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_captured_blocks_match_a_manual_forward_and_the_last_is_features(pool):
    model = tiny_mae().eval()
    data = image_set(24, 0)
    feats, labels = block_features(model, data, pool=pool, batch_size=10, progress=False)
    assert feats.shape == (4, 24, 16) and torch.equal(labels, data.labels)
    images = data.get_batch(torch.arange(24))["images"]
    with torch.no_grad():
        manual = manual_block_outputs(model, images)
        for i, hidden in enumerate(manual):
            normed = model.norm(hidden)
            expected = normed[:, 0] if pool == "cls" else normed[:, 1:].mean(1)
            assert torch.allclose(feats[i], expected, atol=1e-5), i
        assert torch.equal(feats[-1], model.features(images, pool))


def test_last_block_probe_equals_the_probe_of_features():
    model = tiny_mae()
    train, test = image_set(40, 0), image_set(20, 1)
    kwargs = {"epochs": 3, "batch_size": 16, "seed": 2, "progress": False}
    rows = layerwise_probe(model, train, test, pool="mean", batch_size=16, linear_kwargs=kwargs)
    assert [r.block for r in rows] == [0, 1, 2, 3]
    direct = linear_probe(*extract_features(model, train, pool="mean", progress=False),
                          *extract_features(model, test, pool="mean", progress=False), **kwargs)
    assert rows[-1].test_top1 == direct.test_top1 and rows[-1].train_top1 == direct.train_top1


def test_beitv2_blocks_with_the_relative_position_bias():
    torch.manual_seed(0)
    model = BEiTv2(BEiTv2Config(tokenizer_config=TOKENIZER, img_size=8, patch_size=2, in_chans=1, embed_dim=16,
                                depth=2, num_heads=2, early_layers=1, head_layers=1, num_mask_patches=6,
                                min_mask_patches=4)).eval()
    data = image_set(12, 0)
    feats, _ = block_features(model, data, pool="cls", progress=False)
    images = data.get_batch(torch.arange(12))["images"]
    with torch.no_grad():
        assert torch.equal(feats[-1], model.features(images, "cls"))
        h = model.embed(images)
        assert torch.allclose(feats[0], model.norm(h)[:, 0], atol=1e-6)
        assert torch.allclose(feats[1], model.norm(model.blocks[0](h, model.rel_pos_bias()))[:, 0], atol=1e-5)


class TwiceThrough(nn.Module):
    """A features() that runs its block twice: not a one-pass-per-block model."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Identity()])
        self.norm = nn.Identity()

    def features(self, images, pool="cls"):
        h = images.flatten(2).transpose(1, 2)  # (N, 64, 1)
        return self.blocks[0](self.blocks[0](h))[:, 0]


def test_unsupported_models_are_named():
    revcol = RevColV2(RevColV2Config(img_size=8, patch_size=4, in_chans=1, embed_dim=16, num_heads=2, n_levels=2,
                                     encoder_columns=1, decoder_columns=1))
    with pytest.raises(MimkitError, match="RevColV2 has none"):
        block_features(revcol, image_set(4, 0), progress=False)
    with pytest.raises(MimkitError, match="did not run each block exactly once"):
        block_features(TwiceThrough(), image_set(4, 0), progress=False)


def test_cli_layerwise_prints_a_row_per_block(tmp_path, capsys):
    torch.manual_seed(5)  # not the init `eval` draws for the random-init column (seed 0): the columns differ
    model = MAE(tiny_mae(depth=2).config)
    save_checkpoint(tmp_path, 1, model, to_dict(RunConfig(method="mae", model=model.config,
                                                          data=DataConfig(name="digits", image_size=8))))
    assert main(["eval", "layerwise", str(tmp_path), "--limit", "64", "--pool", "both"]) == 0
    train_line, test_line, *lines = capsys.readouterr().out.splitlines()
    assert train_line.startswith("train data   digits train: 64 images (random subset of 64 of 1438")
    assert test_line.startswith("test data    digits test: 64 images (random subset of 64 of 359")
    assert "per block" in lines[0]
    rows = [[c.strip() for c in line.split("|")] for line in lines[3:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("mae", p, str(b)) for p in ("cls", "mean") for b in range(3)]
    table = {(r[1], int(r[2])): tuple(float(c) for c in r[3:]) for r in rows}
    for pretrained, random_init, gain in table.values():
        for top1 in (pretrained, random_init):  # a share of the 64 test images, printed to 2 decimals
            assert 0 <= top1 <= 100 and abs(top1 * 0.64 - round(top1 * 0.64)) < 0.01
        assert gain == pytest.approx(pretrained - random_init, abs=0.015)
    assert any(gain != 0 for _, _, gain in table.values()), "two different models give two different columns"
    # block 0 is the input of the first block: its class position holds cls token + position, the same for
    # every image, so the probe predicts one class (at most 7 of the 64 test images); after the blocks it
    # depends on the image
    assert max(table[("cls", 0)][:2]) <= 700 / 64 + 0.005
    assert all(table[("cls", 2)][i] > table[("cls", 0)][i] for i in (0, 1))
    # the last block is features(pool): its row is `mimkit eval linear` (same seed, 30 epochs, same data)
    assert main(["eval", "linear", str(tmp_path), "--limit", "64", "--pool", "both"]) == 0
    linear = [[c.strip() for c in line.split("|")] for line in capsys.readouterr().out.splitlines()[5:]]
    assert [r[1] for r in linear] == ["cls", "mean"]
    for r in linear:
        assert table[(r[1], 2)][:2] == (float(r[2]), float(r[3])), r
