"""save_pretrained / from_pretrained: the folder layout, exact round trips of weights and outputs,
the model card's facts, the class methods on every registered model, offline repo ids, and the
generation pipeline loading a save_pretrained folder."""
import json

import pytest
import torch

from mimkit.engine.checkpoint import save_checkpoint
from mimkit.engine.run_log import RunLog
from mimkit.errors import CheckpointError
from mimkit.generation import MaskedImagePipeline, MaskedTokenSampler
from mimkit.hub import from_pretrained, save_pretrained
from mimkit.methods import method_registry
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.maskgit import MaskGIT, MaskGITConfig
from mimkit.tokenizers.vqgan import VQGAN

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


def test_class_methods_on_every_registered_model(tmp_path):
    for name, entry in method_registry().items():
        assert callable(getattr(entry.model_class, "save_pretrained")), name
        assert callable(getattr(entry.model_class, "from_pretrained")), name
    vq = VQGAN(MaskGIT(MaskGITConfig(tokenizer_config=TOKENIZER, embed_dim=16, depth=1, num_heads=2)).tokenizer.config)
    vq.save_pretrained(tmp_path / "vq")
    again = VQGAN.from_pretrained(tmp_path / "vq")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in vq.state_dict().items())
    with pytest.raises(CheckpointError, match="not a MAE"):
        MAE.from_pretrained(tmp_path / "vq")


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
