"""VQ-KD: the loss by hand, the frozen teacher outside the state dict, checkpoints without the teacher,
the straight-through gradient, the teacher adapters (mimkit MAE, Hugging Face ViT, callables) and
their errors, the unilm converter against a written-out unilm forward, and `mimkit train` / `eval`."""
import json

import pytest
import torch
import torch.nn.functional as F

from mimkit.config import RunConfig, to_dict
from mimkit.registry import load_model
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.errors import CheckpointError, ConfigError
from mimkit.hub.vqkd_unilm import vqkd_config_from_unilm, vqkd_from_unilm
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
def unilm_state_dict(dim=16, depth=2, dec_depth=1, grid=4, patch=2, chans=1, code_dim=4, codes=8, out_dim=12):
    """Random tensors under the key names of unilm beitv2 modeling_vqkd.VQKD (use_mean_pooling: fc_norm,
    BEiT attention with q_bias / v_bias and a bias-free qkv) and norm_ema_quantizer, plus its
    training-only tensors (EMA statistics, teacher, scaling layer)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    sd = {}

    def vit(prefix, in_chans, p, n_blocks):
        sd[f"{prefix}.cls_token"], sd[f"{prefix}.pos_embed"] = r(1, 1, dim), r(1, grid * grid + 1, dim)
        sd[f"{prefix}.patch_embed.proj.weight"], sd[f"{prefix}.patch_embed.proj.bias"] = r(dim, in_chans, p, p), r(dim)
        for i in range(n_blocks):
            b = f"{prefix}.blocks.{i}"
            sd.update({f"{b}.norm1.weight": 1 + r(dim), f"{b}.norm1.bias": r(dim), f"{b}.attn.q_bias": r(dim),
                       f"{b}.attn.v_bias": r(dim), f"{b}.attn.qkv.weight": r(3 * dim, dim),
                       f"{b}.attn.proj.weight": r(dim, dim), f"{b}.attn.proj.bias": r(dim),
                       f"{b}.norm2.weight": 1 + r(dim), f"{b}.norm2.bias": r(dim),
                       f"{b}.mlp.fc1.weight": r(4 * dim, dim), f"{b}.mlp.fc1.bias": r(4 * dim),
                       f"{b}.mlp.fc2.weight": r(dim, 4 * dim), f"{b}.mlp.fc2.bias": r(dim)})
        sd[f"{prefix}.fc_norm.weight"], sd[f"{prefix}.fc_norm.bias"] = 1 + r(dim), r(dim)

    vit("encoder", chans, patch, depth)
    vit("decoder", code_dim, 1, dec_depth)
    sd.update({"encode_task_layer.0.weight": r(dim, dim), "encode_task_layer.0.bias": r(dim),
               "encode_task_layer.2.weight": r(code_dim, dim), "encode_task_layer.2.bias": r(code_dim),
               "decode_task_layer.0.weight": r(dim, dim), "decode_task_layer.0.bias": r(dim),
               "decode_task_layer.2.weight": r(out_dim, dim), "decode_task_layer.2.bias": r(out_dim),
               "quantize.embedding.weight": F.normalize(r(codes, code_dim), dim=1),
               "quantize.embedding.cluster_size": r(codes), "quantize.embedding.embed_avg": r(codes, code_dim),
               "quantize.embedding.initted": torch.ones(1), "quantize.cluster_size": r(codes),
               "teacher_model.visual.proj": r(dim, out_dim), "scaling_layer.shift": r(1, 3, 1, 1)})
    return sd


def unilm_reference_codes(sd, images, heads, patch=2):
    """unilm's VQ-KD encode written out: [0,1] -> [-1,1], BEiT ViT (qkv bias = [q_bias, 0, v_bias]),
    fc_norm on the patch tokens, task layer, l2-normalised nearest code by Euclidean distance."""
    x = images * 2 - 1
    x = F.conv2d(x, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd["encoder.pos_embed"]
    n, length, dim = x.shape
    i = 0
    while f"encoder.blocks.{i}.norm1.weight" in sd:
        b = lambda k: sd[f"encoder.blocks.{i}.{k}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        bias = torch.cat([b("attn.q_bias"), torch.zeros_like(b("attn.v_bias")), b("attn.v_bias")])
        qkv = F.linear(h, b("attn.qkv.weight"), bias).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * (dim // heads) ** -0.5) @ qkv[1].transpose(-2, -1)).softmax(-1)
        x = x + F.linear((attn @ qkv[2]).transpose(1, 2).reshape(n, length, dim), b("attn.proj.weight"),
                         b("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias"))), b("mlp.fc2.weight"),
                         b("mlp.fc2.bias"))
        i += 1
    x = F.layer_norm(x[:, 1:], (dim,), sd["encoder.fc_norm.weight"], sd["encoder.fc_norm.bias"], eps=1e-6)
    z = F.linear(torch.tanh(F.linear(x, sd["encode_task_layer.0.weight"], sd["encode_task_layer.0.bias"])),
                 sd["encode_task_layer.2.weight"], sd["encode_task_layer.2.bias"])
    z = F.normalize(z, dim=-1).reshape(-1, z.shape[-1])
    book = sd["quantize.embedding.weight"]
    dist = z.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * z @ book.t()
    return dist.argmin(1).view(n, -1)


def test_unilm_checkpoint_converts_with_no_missing_or_unexpected_key_and_the_same_codes(tmp_path):
    sd = unilm_state_dict()
    torch.save({"model": sd}, tmp_path / "vqkd.pth")
    model, report = vqkd_from_unilm(tmp_path / "vqkd.pth", num_heads=2, decoder_num_heads=2)
    assert report.missing == [] and report.unexpected == [] and "6 unilm training-only" in report.summary()
    c = model.config
    assert (c.img_size, c.patch_size, c.embed_dim, c.depth, c.decoder_depth, c.code_dim, c.codebook_size,
            c.teacher_dim) == (8, 2, 16, 2, 1, 4, 8, 12)
    qkv = model.state_dict()["encoder.blocks.1.attn.qkv.bias"]
    assert torch.equal(qkv[16:32], torch.zeros(16)) and torch.equal(qkv[32:], sd["encoder.blocks.1.attn.v_bias"])
    assert torch.equal(model.state_dict()["decoder.norm.weight"], sd["decoder.fc_norm.weight"])
    images = torch.rand(6, 1, 8, 8)
    assert torch.equal(model.encode(images).view(6, -1), unilm_reference_codes(sd, images, heads=2))
    assert model.features_from_codes(model.encode(images)).shape == (6, 16, 12)
    # an unknown tensor (layer scale, which VQ-KD does not use) is refused in strict mode
    with pytest.raises(CheckpointError, match="unexpected"):
        vqkd_from_unilm({**sd, "encoder.blocks.0.gamma_1": torch.ones(16)}, num_heads=2, decoder_num_heads=2)
    with pytest.raises(CheckpointError, match="not a unilm BEiT v2 VQ-KD"):
        vqkd_config_from_unilm({"blocks.0.norm1.weight": torch.ones(2)})


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
