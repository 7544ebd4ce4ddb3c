"""VQ-KD: the loss by hand, the frozen teacher outside the state dict, checkpoints without the teacher,
the straight-through gradient, the teacher adapters (mimkit MAE, Hugging Face ViT, callables) and
their errors, and `mimkit train` / `eval` (the unilm converter: tests/test_unilm_reference.py)."""
import json

import pytest
import torch
import torch.nn.functional as F

from mimkit.config import RunConfig, to_dict
from mimkit.registry import load_model
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.errors import ConfigError
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.teacher_loading import load_teacher
from mimkit.tokenizers.teacher import Teacher
from mimkit.tokenizers.vqkd import VQKD, VQKDConfig

torch.set_num_threads(1)

TINY = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16,
            decoder_depth=1, decoder_num_heads=2, codebook_size=8, code_dim=4, teacher_dim=16)
TEACHER = MAEConfig(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                    decoder_depth=1, decoder_num_heads=2)


def tiny(**overrides) -> VQKD:
    torch.manual_seed(0)
    return VQKD(VQKDConfig(**{**TINY, **overrides}))


def mae_teacher() -> MAE:
    torch.manual_seed(1)
    return MAE(TEACHER)


# ------------------------------------------------------------------ loss and gradients
def test_loss_is_one_minus_cosine_plus_beta_commitment_by_hand():
    model = tiny(beta=0.5).eval()
    target = torch.randn(3, 16, 16)
    model.attach_teacher(Teacher(lambda images: target[: images.shape[0]], grid_size=(4, 4)))
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(torch.randn(8, 4))
        model.quantize.initialized.fill_(True)
    images = torch.rand(3, 1, 8, 8)
    out = model(images)
    with torch.no_grad():
        z = F.normalize(model.encode_task_layer(model.encoder(images * 2 - 1)), dim=-1)  # (3, 16, 4)
        book = F.normalize(model.quantize.embedding.weight, dim=-1)
        codes = (z @ book.t()).argmax(-1)
        zq = book[codes]
        commitment = ((z - zq) ** 2).mean()
        pred = model.decode_task_layer(model.decoder(zq.view(3, 4, 4, 4).permute(0, 3, 1, 2)))
        cos = ((pred / pred.norm(dim=-1, keepdim=True)) * (target / target.norm(dim=-1, keepdim=True))).sum(-1)
        expected = (1 - cos.mean()) + 0.5 * commitment
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["cosine"].item() == pytest.approx(cos.mean().item(), rel=1e-5)
    assert out.logs["commitment"].item() == pytest.approx(commitment.item(), rel=1e-5)
    assert torch.equal(out.codes.view(3, 16), codes) and torch.equal(model.encode(images).view(3, 16), codes)
    assert {"usage", "perplexity", "rec_loss", "restarted"} <= set(out.logs)


def test_straight_through_gradient_reaches_the_encoder_and_the_teacher_gets_none():
    model = tiny(beta=0.0)  # no commitment: the encoder can only learn through the straight-through path
    teacher = mae_teacher()
    model.attach_teacher(teacher)
    model.train()
    assert not model.teacher.training and not teacher.training  # stays in eval mode
    out = model(torch.rand(4, 1, 8, 8))
    out.loss.backward()
    for name in ("encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight", "encode_task_layer.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.quantize.embedding.weight.grad is None  # EMA codebook: no gradient
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any("teacher" in k or k.startswith("external") for k in model.state_dict())
    assert set(model.state_dict()) == set(tiny().state_dict())


def test_training_forward_runs_kmeans_init_and_ema_updates_then_the_codebook_stays_unit_norm():
    model = tiny(restart_after=1)
    model.attach_teacher(mae_teacher())
    model.train()
    model(torch.rand(8, 1, 8, 8))
    assert bool(model.quantize.initialized)
    before = model.quantize.embedding.weight.clone()
    model(torch.rand(8, 1, 8, 8))
    assert not torch.equal(before, model.quantize.embedding.weight)
    assert torch.allclose(model.quantize.embedding.weight.norm(dim=1), torch.ones(8), atol=1e-5)


# ------------------------------------------------------------------ checkpoints and fingerprint
def test_save_load_round_trip_gives_the_same_codes_without_the_teacher(tmp_path):
    model = tiny()
    model.attach_teacher(mae_teacher())
    model.train()
    for _ in range(2):
        model(torch.rand(8, 1, 8, 8)).loss.backward()
    config = RunConfig(method="vqkd", model=VQKDConfig(**{**TINY, "teacher": str(tmp_path / "gone")}))
    save_checkpoint(tmp_path / "run", 2, model, to_dict(config))
    loaded, _ = load_model(tmp_path / "run")
    images = torch.rand(5, 1, 8, 8)
    assert loaded.teacher is None
    assert torch.equal(loaded.encode(images), model.eval().encode(images))
    assert loaded.fingerprint() == model.fingerprint()
    with pytest.raises(ConfigError, match="model.teacher"):
        loaded(images)


def test_fingerprint_follows_the_code_path_only():
    model = tiny()
    base = model.fingerprint()
    with torch.no_grad():
        model.decoder.blocks[0].mlp.fc1.weight.add_(1.0)
        model.decode_task_layer[2].bias.add_(1.0)
    assert model.fingerprint() == base
    with torch.no_grad():
        model.encode_task_layer[2].weight.add_(1e-3)
    assert model.fingerprint() != base


# ------------------------------------------------------------------ teachers
def test_mae_patch_features_are_the_unmasked_normed_patch_tokens():
    mae = mae_teacher().eval()
    images = torch.rand(2, 1, 8, 8)
    x = mae.normalize(images)
    h = torch.cat([(mae.cls_token + mae.pos_embed[:, :1]).expand(2, -1, -1), mae.patch_embed(x) + mae.pos_embed[:, 1:]], 1)
    for block in mae.blocks:
        h = block(h)
    expected = mae.norm(h)[:, 1:]
    assert torch.allclose(mae.patch_features(images), expected, atol=1e-5)
    assert torch.allclose(mae.features(images, "mean"), expected.mean(1), atol=1e-5)


def test_hugging_face_teacher_matches_transformers_own_output(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    hf = ViTModel(ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32), add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.3, 0.4, 0.5], "image_std": [0.2, 0.25, 0.3]}))
    teacher = load_teacher(tmp_path / "vit")
    assert teacher.grid_size == (4, 4)
    images = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor([0.3, 0.4, 0.5]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = hf(pixel_values=(images - mean) / std).last_hidden_state[:, 1:]
    assert torch.allclose(teacher(images), expected, atol=1e-5)
    # grey 8 px input is resized to the model's 16 px and repeated to its 3 channels
    grey = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        up = F.interpolate(grey, size=(16, 16), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
        expected = hf(pixel_values=(up - mean) / std).last_hidden_state[:, 1:]
    assert torch.allclose(teacher(grey), expected, atol=1e-5)
    model = tiny(patch_size=2)  # 4x4 grid, 16-d: fits
    model.attach_teacher(teacher)
    assert model(grey).loss.isfinite()


def test_bad_teachers_are_clear_errors(tmp_path):
    model = tiny()
    with pytest.raises(ConfigError, match=r"4x4.*patch_size"):  # 16 patches expected, 9 given
        model.attach_teacher(Teacher(lambda x: torch.zeros(x.shape[0], 9, 16)))
    with pytest.raises(ConfigError, match=r"3x3 feature grid but the tokenizer's grid is 4x4"):
        model.attach_teacher(Teacher(lambda x: torch.zeros(x.shape[0], 16, 16), grid_size=(3, 3)))
    with pytest.raises(ConfigError, match="teacher_dim=8"):
        model.attach_teacher(Teacher(lambda x: torch.zeros(x.shape[0], 16, 8)))
    with pytest.raises(ConfigError, match=r"\(N, L, D\)"):
        model.attach_teacher(Teacher(lambda x: torch.zeros(x.shape[0], 16)))
    with pytest.raises(ConfigError, match="does not exist"):
        load_teacher(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="is not set"):
        load_teacher("")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ConfigError, match="neither a mimkit checkpoint"):
        load_teacher(tmp_path / "junk")
    big = TEACHER.__class__(**{**TEACHER.__dict__, "patch_size": 4})  # 2x2 grid
    save_checkpoint(tmp_path / "mae4", 1, MAE(big), to_dict(RunConfig(method="mae", model=big)))
    with pytest.raises(ConfigError, match="2x2 feature grid"):
        model.attach_teacher(load_teacher(tmp_path / "mae4"))


# ------------------------------------------------------------------ unilm converter
# the unilm VQ-KD converter (codes, decoded features and loss against a reference forward written from
# the official code, the key handling) is tested in tests/test_unilm_reference.py; the unilm key set is
# imported here because tests/test_convert_folders.py takes it from this module
from test_unilm_reference import unilm_state_dict  # noqa: E402,F401


# ------------------------------------------------------------------ command line
def test_train_with_a_mae_run_folder_as_teacher_then_eval_without_and_with_it(tmp_path, capsys):
    from mimkit.cli import main

    save_checkpoint(tmp_path / "mae", 1, mae_teacher(), to_dict(RunConfig(method="mae", model=TEACHER)))
    args = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2", "model.embed_dim=16",
            "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_num_heads=2",
            "model.codebook_size=8", "model.code_dim=4", f"model.teacher={tmp_path / 'mae'}", "train.steps=2",
            "train.batch_size=16", "train.progress=false", "train.log_every=1", "train.threads=1"]
    run = tmp_path / "vqkd"
    assert main(["train", "vqkd_fmnist", *args, "--out", str(run)]) == 0
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "cosine", "commitment", "usage", "perplexity"} <= set(header)
    saved = json.loads(next(run.glob("checkpoints/step_*/config.json")).read_text())
    assert saved["model"]["teacher_dim"] == 16  # read from the teacher
    assert main(["eval", "tokenizer", str(run), "--limit", "32"]) == 0
    text = capsys.readouterr().out
    assert "teacher cos" in text and "usage" in text and "PSNR" not in text and "4x4 per image, codebook 8" in text
    (tmp_path / "mae").rename(tmp_path / "mae_moved")  # the tokenizer works without its teacher
    assert main(["eval", "tokenizer", str(run), "--limit", "32"]) == 0
    text = capsys.readouterr().out
    assert "usage" in text and "teacher cos  not measured" in text
    assert main(["train", "vqkd_fmnist", *args, "--out", str(tmp_path / "again")]) == 2
    assert "model.teacher" in capsys.readouterr().err
