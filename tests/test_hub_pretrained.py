"""save_pretrained / from_pretrained: the folder layout, exact round trips of weights and outputs,
the model card's facts, every registered model through its class methods and from_pretrained with
equal weights and outputs, offline repo ids, and the generation pipeline loading a save_pretrained folder."""
import json

import pytest
import torch

from mimkit.engine.checkpoint import save_checkpoint
from mimkit.engine.run_log import RunLog
from mimkit.errors import CheckpointError
from mimkit.generation import MaskedImagePipeline, MaskedTokenSampler
from mimkit.hub import from_pretrained, save_pretrained
from mimkit.registry import method_registry
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.maskgit import MaskGIT, MaskGITConfig

TOKENIZER = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}


def tiny_mae() -> MAE:
    torch.manual_seed(0)
    return MAE(MAEConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2,
                         decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2))


def fake_run(tmp_path, model, method="mae"):
    """A run folder as training leaves it: a checkpoint and a log.csv of 2 rows."""
    run = tmp_path / "run"
    config = {"method": method, "model": {}, "data": {"name": "fashion-mnist", "image_size": 8},
              "train": {"steps": 40, "batch_size": 16, "accum_steps": 1}}
    save_checkpoint(run, 40, model, config)
    log = RunLog(run, tensorboard=False)
    log.log(20, {"loss": 0.5, "lr": 1e-3})
    log.log(40, {"loss": 0.2468, "lr": 5e-4})
    log.close()
    return run


def test_mae_round_trip_folder_and_card(tmp_path):
    model = tiny_mae()
    folder = save_pretrained(model, tmp_path / "export", run=fake_run(tmp_path, model))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "checksums.sha256", "config.json",
                                                        "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "mae" and config["model"]["embed_dim"] == 8 and config["data"]["name"] == "fashion-mnist"
    card = (folder / "README.md").read_text()
    assert "method: `mae`" in card and "`fashion-mnist`" in card and "steps: 40 of 40" in card and "loss=0.2468" in card
    loaded = from_pretrained(folder)
    assert isinstance(loaded, MAE) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images, noise = torch.rand(2, 1, 8, 8), torch.rand(2, 4)
    model.eval()
    assert torch.equal(loaded(images, noise=noise).loss, model(images, noise=noise).loss)


# a tiny config of every registered method (a method registered without one here fails the test below)
TINY_CONFIGS = {
    "mae": dict(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2, decoder_embed_dim=8,
                decoder_depth=1, decoder_num_heads=2),
    "vqgan": dict(TOKENIZER["model"]),
    "maskgit_vqgan": dict(img_size=8, in_chans=1, base_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                          codebook_size=16, code_dim=4, disc_channels=8, disc_layers=1),
    "vqkd": dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16,
                 decoder_depth=1, decoder_num_heads=2, codebook_size=8, code_dim=4, teacher_dim=16),
    "maskgit": dict(tokenizer_config=TOKENIZER, num_classes=3, embed_dim=16, depth=1, num_heads=2),
    "mage": dict(tokenizer_config=TOKENIZER, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                 decoder_depth=1, decoder_num_heads=2, projection_hidden_dim=16, projection_dim=8),
    "revcolv2": dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, num_heads=2, n_levels=2, encoder_columns=1,
                     decoder_columns=1),
    "beitv2": dict(tokenizer_config=TOKENIZER, img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=2,
                   num_heads=2, early_layers=1, head_layers=1, num_mask_patches=6, min_mask_patches=4),
    "classifier": dict(img_size=8, in_chans=1, num_classes=3, widths=(8, 16)),
}


def fixed_outputs(name: str, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What `model` computes on fixed inputs: its features, a tokenizer's codes and what it decodes from
    them, a token model's logits on a half-masked grid, a classifier's logits, and the training loss
    under a fixed seed (its random masks drawn alike). VQ-KD's loss needs its teacher (not saved)."""
    out = {}
    with torch.no_grad():
        if hasattr(model, "features"):
            out["features"] = model.features(images)
        if name in ("vqgan", "maskgit_vqgan", "vqkd"):
            out["codes"] = codes = model.encode(images)
            out["decoded"] = model.features_from_codes(codes) if name == "vqkd" else model.decode(codes)
        if hasattr(model, "token_logits"):
            tokens = model.tokenizer.encode(images).flatten(1)
            tokens[:, ::2] = model.mask_token_id
            out["token_logits"] = model.token_logits(tokens, None)
        if name == "classifier":
            out["logits"] = model.logits(images)
        if name != "vqkd":
            torch.manual_seed(1)
            out["loss"] = model(images=images, labels=labels).loss
    return out


def test_every_registered_model_round_trips_with_equal_outputs(tmp_path):
    registry = method_registry()
    assert set(TINY_CONFIGS) == set(registry), "give every registered method a tiny config here"
    images, labels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    for name, entry in registry.items():
        torch.manual_seed(0)
        model = entry.model_class(entry.config_class(**TINY_CONFIGS[name]))
        with torch.no_grad():  # weights off their init values: a loader that re-initialises is caught
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.eval()
        expected = fixed_outputs(name, model, images, labels)
        model.save_pretrained(tmp_path / name)
        torch.manual_seed(123)  # a fresh build would draw other weights
        for loaded in (entry.model_class.from_pretrained(tmp_path / name), from_pretrained(tmp_path / name)):
            assert type(loaded) is entry.model_class and not loaded.training, name
            state = loaded.state_dict()
            assert state.keys() == model.state_dict().keys(), name
            assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), name
            got = fixed_outputs(name, loaded, images, labels)
            assert got.keys() == expected.keys() and expected, name
            for key, value in expected.items():
                assert torch.equal(got[key], value), f"{name}: {key}"
    with pytest.raises(CheckpointError, match="holds a vqgan model, not mae"):
        MAE.from_pretrained(tmp_path / "vqgan")


def test_repo_id_that_is_not_cached_is_a_clear_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="downloads are not available offline"):
        from_pretrained("someone/mae-that-is-not-here")
    with pytest.raises(CheckpointError, match="does not exist"):
        from_pretrained(tmp_path / "missing")


def test_pipeline_from_a_save_pretrained_folder(tmp_path):
    torch.manual_seed(0)
    model = MaskGIT(MaskGITConfig(tokenizer_config=TOKENIZER, embed_dim=16, depth=1, num_heads=2, dropout=0.0))
    save_pretrained(model, tmp_path / "maskgit")
    pipe = MaskedImagePipeline.from_pretrained(tmp_path / "maskgit", steps=2)
    direct = MaskedImagePipeline(model.eval(), MaskedTokenSampler(steps=2))
    out = pipe(n=8, generator=torch.Generator().manual_seed(1))
    ref = direct(n=8, generator=torch.Generator().manual_seed(1))
    assert len(out.images) == 8 and out.images[0].size == (8, 8)
    assert torch.equal(out.tensors, ref.tensors)
