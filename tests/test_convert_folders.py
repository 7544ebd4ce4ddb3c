"""`mimkit convert NAME IN OUT` for every import direction writes a model folder (save_pretrained)
that `mimkit reconstruct`, load_model and from_pretrained take, equal to converting in memory with
the mimkit.hub functions; the refusals (non-empty OUT, a .safetensors OUT, converters that cannot
make a complete model) are one line, exit 2, nothing written."""
import argparse
import json

import pytest
import torch
from test_converters import tiny_mae, tiny_mage
from test_vqgan import synthetic_taming_state
from test_vqkd import unilm_state_dict

from mimkit.cli import main
from mimkit.hub import (converter_table, mae_from_official, mimkit_to_mage_official, mimkit_to_vitmae,
                        vitmae_to_mimkit, vqgan_from_taming, vqkd_from_unilm)
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.registry import from_pretrained, load_model
from mimkit.tokenizers.vqgan import BOOKKEEPING

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
HEADS = ["--set", "num_heads=2", "--set", "decoder_num_heads=2"]
FOLDER_FILES = {"config.json", "model.safetensors", "checksums.sha256", "README.md"}


def grey_mae(seed=0) -> MAE:
    """An MAE for 8x8 grey images (the digits data), random weights."""
    torch.manual_seed(seed)
    return MAE(MAEConfig(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                         decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)).eval()


def assert_same_model(loaded, reference, method):
    assert loaded.method_name == method and type(loaded) is type(reference)
    assert loaded.config == reference.config
    ref = reference.state_dict()
    assert loaded.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())


def assert_folder(out, method):
    assert {p.name for p in out.iterdir()} == FOLDER_FILES
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["model"]


def test_official_mae_converts_to_a_folder_that_reconstruct_and_from_pretrained_take(tmp_path, capsys):
    mae = grey_mae()
    args = argparse.Namespace(model="mae_vit_tiny", norm_pix_loss=True, mask_ratio=0.5)
    torch.save({"model": mae.state_dict(), "args": args, "epoch": 3}, tmp_path / "mae.pth")
    out = tmp_path / "mae_folder"
    assert main(["convert", "mae-official", str(tmp_path / "mae.pth"), str(out), *HEADS]) == 0
    assert "mae model folder written" in capsys.readouterr().out
    assert_folder(out, "mae")
    reference, report = mae_from_official(tmp_path / "mae.pth", num_heads=2, decoder_num_heads=2)
    assert report.complete and reference.config.norm_pix_loss and reference.config.mask_ratio == 0.5
    loaded, config = load_model(out)
    assert config.method == "mae"
    assert_same_model(loaded, reference, "mae")
    assert_same_model(from_pretrained(out), reference, "mae")
    assert all(torch.equal(v, mae.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert_same_model(MAE.from_pretrained(out), reference, "mae")
    images = torch.rand(3, 1, 8, 8)
    torch.manual_seed(0)
    ours = loaded.reconstruct(images)
    torch.manual_seed(0)
    theirs = reference.reconstruct(images)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(loaded.features(images), mae.features(images))
    assert main(["reconstruct", str(out), "--data", "digits", "--limit", "20", "--n", "2",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
    assert main(["eval", "knn", str(out), "--data", "digits", "--limit", "40"]) == 0


@pytest.mark.parametrize("scheme", ["v5", "v4"])
def test_transformers_vitmae_converts_to_a_folder(tmp_path, scheme):
    mae = tiny_mae()
    hf = {k: v.contiguous() for k, v in mimkit_to_vitmae(mae.state_dict(), scheme).items()}
    from safetensors.torch import save_file
    save_file(hf, str(tmp_path / "hf.safetensors"))
    out = tmp_path / "out"
    assert main(["convert", f"vitmae-{scheme}", str(tmp_path / "hf.safetensors"), str(out), *HEADS]) == 0
    assert_folder(out, "mae")
    reference, _ = mae_from_official(vitmae_to_mimkit(hf, scheme), num_heads=2, decoder_num_heads=2)
    loaded = from_pretrained(out)
    assert_same_model(loaded, reference, "mae")
    assert_same_model(loaded, mae, "mae")  # the round trip is exact
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(loaded.features(images), reference.features(images))


def test_taming_vqgan_converts_to_a_folder(tmp_path):
    state = synthetic_taming_state()
    torch.save({"state_dict": state, "global_step": 5}, tmp_path / "last.ckpt")
    out = tmp_path / "vqgan"
    assert main(["convert", "taming-vqgan", str(tmp_path / "last.ckpt"), str(out), "--set", "img_size=16"]) == 0
    assert_folder(out, "vqgan")
    reference, _ = vqgan_from_taming(state, img_size=16)
    loaded, _ = load_model(out)
    assert_same_model(loaded, reference, "vqgan")
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), reference.encode(images))
        ours, theirs = loaded.reconstruct(images), reference.reconstruct(images)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_unilm_vqkd_converts_to_a_folder(tmp_path):
    sd = unilm_state_dict()
    torch.save({"model": sd}, tmp_path / "vqkd.pth")
    out = tmp_path / "vqkd"
    assert main(["convert", "vqkd-unilm", str(tmp_path / "vqkd.pth"), str(out), *HEADS]) == 0
    assert_folder(out, "vqkd")
    reference, _ = vqkd_from_unilm(sd, num_heads=2, decoder_num_heads=2)
    loaded = from_pretrained(out)
    assert_same_model(loaded, reference, "vqkd")
    images = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), reference.encode(images))


# ----------------------------------------------------------------------------- refusals
def one_line_refusal(capsys, argv, expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and expected in err, repr(err)


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    torch.save({"model": grey_mae().state_dict()}, tmp_path / "mae.pth")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_refusal(capsys, ["convert", "mae-official", str(tmp_path / "mae.pth"), str(full), *HEADS],
                     "exists and is not empty; pass --overwrite")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    one_line_refusal(capsys, ["convert", "mae-official", str(tmp_path / "mae.pth"), str(tmp_path / "x.safetensors"),
                              *HEADS], "OUT is a folder now")
    assert not (tmp_path / "x.safetensors").exists()
    # --overwrite replaces the folder; an empty folder needs no --overwrite
    assert main(["convert", "mae-official", str(tmp_path / "mae.pth"), str(full), *HEADS, "--overwrite"]) == 0
    assert {p.name for p in full.iterdir()} == FOLDER_FILES
    (tmp_path / "empty").mkdir()
    assert main(["convert", "mae-official", str(tmp_path / "mae.pth"), str(tmp_path / "empty"), *HEADS]) == 0
    # an encoder-only checkpoint cannot make a complete MAE
    encoder = {k: v for k, v in grey_mae().state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "encoder.pth")
    one_line_refusal(capsys, ["convert", "mae-official", str(tmp_path / "encoder.pth"), str(tmp_path / "enc"), *HEADS],
                     "cannot make a complete mae model: it has no mask_token, decoder_pos_embed")
    assert not (tmp_path / "enc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "encoder.pth", "full", "mae.pth"]  # no temp left


def test_official_mage_is_refused_naming_the_missing_tokenizer(tmp_path, capsys):
    model = tiny_mage()
    official = mimkit_to_mage_official(model.state_dict(), img_size=8, in_chans=1)
    official |= {f"vqgan.{k}": v for k, v in model.tokenizer.state_dict().items() if k not in BOOKKEEPING}
    torch.save({"model": official}, tmp_path / "mage.pth")
    out = tmp_path / "mage"
    one_line_refusal(capsys, ["convert", "mage-official", str(tmp_path / "mage.pth"), str(out)],
                     "MaskGIT VQGAN")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mage.pth"]


def test_list_says_what_each_import_writes_and_what_its_test_checks(capsys):
    assert main(["convert", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, row in converter_table().items():
        line = next(line for line in lines if line.startswith(name + " "))
        if row.import_fn is not None:
            assert row.build is not None and row.produces in line and row.formats in line
            assert row.produces.startswith(("a model folder", "refused: only"))
        else:
            assert "export only" in line


def test_a_folder_saved_by_transformers_converts_with_its_own_heads_and_matches_its_forward(tmp_path):
    """A ViTMAEForPreTraining saved by the installed transformers (its on-disk layout, decoder layers
    under decoder.decoder_encoder.layer in 5.x) converts from its model.safetensors; the heads, eps and
    image size come from the config.json beside it (4 heads at width 64: the width // 64 guess would be
    1), and the converted model gives transformers' predictions and loss on the same pixels and noise."""
    import warnings

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
        image_size=32, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
        decoder_intermediate_size=128, layer_norm_eps=1e-12)).eval()
    with torch.no_grad():  # transformers leaves fresh sin-cos tables at zero; any fixed table will do
        hf.vit.embeddings.position_embeddings.normal_(0, 0.02)
        hf.decoder.decoder_pos_embed.normal_(0, 0.02)
    hf.save_pretrained(tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "guessing num_heads" warning
        assert main(["convert", "vitmae-v4", str(tmp_path / "hf" / "model.safetensors"), str(tmp_path / "out")]) == 0
    model, config = load_model(tmp_path / "out")
    assert (config.model.num_heads, config.model.decoder_num_heads, config.model.img_size) == (4, 4, 32)
    # transformers takes the pixels as given: the same weights under identity normalisation
    model = MAE(MAEConfig(**{**config.model.__dict__, "pixel_mean": (0.0,), "pixel_std": (1.0,)}))
    model.load_state_dict(load_model(tmp_path / "out")[0].state_dict())
    g = torch.Generator().manual_seed(3)
    pixels, noise = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 64, generator=g)
    with torch.no_grad():
        theirs, ours = hf(pixel_values=pixels, noise=noise), model.eval()(pixels, noise=noise)
    torch.testing.assert_close(ours.pred, theirs.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)
