"""VQGAN: shapes for f = 4/8/16, the single-backward GAN scheme against separate backward passes,
the adaptive weight by hand, PSNR by hand, the perceptual network loader, the taming converter's key
set on a synthetic checkpoint with taming's key names (its outputs against taming's forward:
tests/test_taming_reference.py), fingerprint, resume and the command line."""
import copy
import csv
import dataclasses
import math

import pytest
import torch
from PIL import Image

from mimkit.config import load_config
from mimkit.files.checkpoint_folder import latest_checkpoint
from mimkit.registry import load_model
from mimkit.errors import CheckpointError, ConfigError
from mimkit.eval import psnr
from mimkit.files.state_dicts import save_state_dict_file
from mimkit.hub.taming import load_taming_vqgan, vqgan_config_from_taming, vqgan_from_taming
from mimkit.tokenizers.perceptual import load_perceptual_network
from mimkit.tokenizers.vqgan import VQGAN, VQGANConfig
from mimkit.tokenizers.vqgan_loss import adaptive_weight, hinge_d_loss

torch.set_num_threads(1)

TINY = dict(img_size=16, in_chans=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
            z_channels=8, code_dim=4, codebook_size=16, norm_groups=4, disc_channels=8, disc_layers=2)


def tiny(**overrides) -> VQGAN:
    return VQGAN(VQGANConfig(**{**TINY, **overrides}))


# ------------------------------------------------------------------ shapes and API
@pytest.mark.parametrize("mult, f", [((1, 2, 2), 4), ((1, 1, 2, 2), 8), ((1, 1, 2, 2, 2), 16)])
def test_encode_decode_shapes_for_each_downsampling_factor(mult, f):
    torch.manual_seed(0)
    model = tiny(img_size=32, in_chans=3, channel_mult=mult, attn_resolutions=(32 // f,)).eval()
    images = torch.rand(2, 3, 32, 32)
    codes = model.encode(images)
    assert codes.shape == (2, 32 // f, 32 // f) and codes.dtype == torch.int64
    assert model.grid_size == (32 // f, 32 // f) and model.codebook_size == 16
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    decoded = model.decode(codes)
    assert decoded.shape == images.shape and 0 <= decoded.min() and decoded.max() <= 1
    columns = model.reconstruct(images)
    assert list(columns) == ["original", "reconstruction"] and torch.equal(columns["reconstruction"], decoded)
    # the attention blocks sit where the config says: at side 32 // f, i.e. the last encoder level
    assert len(model.encoder.down[-1].attn) == 1 and all(len(level.attn) == 0 for level in model.encoder.down[:-1])


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="multiple of the downsampling factor"):
        VQGANConfig(img_size=30, channel_mult=(1, 2, 2)).validate()
    with pytest.raises(ConfigError, match="perceptual_path"):
        VQGANConfig(perceptual_weight=1.0).validate()
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\)"):
        tiny().encode(torch.rand(2, 3, 16, 16))


# ------------------------------------------------------------------ losses
def test_adaptive_weight_matches_hand_computation():
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    x, target, c = torch.tensor([0.5, 1.0, 2.0]), torch.ones(3), torch.tensor([1.0, 2.0, -1.0])
    out = w * x  # (0.5, -2, 6)
    rec = (out - target).abs().mean()  # grad sign(out - t) * x / 3 = (-0.5, -1, 2) / 3
    g = -(out * c).mean()  # grad -c * x / 3 = (-0.5, -2, 2) / 3
    expected = (math.sqrt(5.25) / 3) / (math.sqrt(8.25) / 3 + 1e-4)
    assert adaptive_weight(rec, g, w).item() == pytest.approx(expected, rel=1e-6)
    assert adaptive_weight(rec * 100, g * 1e-12, w).item() == pytest.approx(1e4)  # clamped at 1e4


def test_hinge_loss_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (0.25 + 0.5)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)


def grads(model, prefix_disc: bool) -> dict:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters() if p.requires_grad and n.startswith("loss.") == prefix_disc}


def test_one_backward_gives_each_player_exactly_its_own_gradient():
    torch.manual_seed(0)
    model = tiny(disc_start=0, disc_weight=0.8).train()
    ref = copy.deepcopy(model)
    x = torch.rand(4, 1, 16, 16)

    out = model(x)
    out.loss.backward()
    gen_one, disc_one = grads(model, False), grads(model, True)

    # reference: taming's two separate passes (generator loss, then discriminator loss)
    xs = x * 2 - 1
    q = ref.quantize(ref.encode_features(x))
    recon = ref.decode_vectors(q.quantized)
    rec = (xs - recon).abs().mean()
    disc = ref.loss.discriminator
    g_loss = -disc(recon).mean()
    weight = adaptive_weight(rec, g_loss, ref.decoder.conv_out.weight) * 0.8
    (rec + q.loss + weight * g_loss).backward(retain_graph=True)
    gen_ref = grads(ref, False)
    ref.zero_grad(set_to_none=True)
    hinge_d_loss(disc(xs), disc(recon.detach())).backward()
    disc_ref = grads(ref, True)
    assert not any(p.grad is not None and p.grad.any() for n, p in ref.named_parameters() if not n.startswith("loss."))

    assert out.logs["disc_weight"].item() == pytest.approx(weight.item(), rel=1e-5)
    for name in gen_ref:
        assert torch.allclose(gen_one[name], gen_ref[name], rtol=1e-4, atol=1e-7), name
    for name in disc_ref:
        assert torch.allclose(disc_one[name], disc_ref[name], rtol=1e-4, atol=1e-7), name
    assert any(g.any() for g in disc_one.values()) and any(g.any() for g in gen_one.values())


def test_discriminator_waits_for_its_start_step_which_survives_a_reload():
    torch.manual_seed(0)
    model = tiny(disc_start=2).train()
    x = torch.rand(2, 1, 16, 16)
    for _ in range(2):
        out = model(x)
        assert out.logs["d_loss"].item() == 0.0
        out.loss.backward()
        assert all(p.grad is None for p in model.loss.parameters())
    state = model.state_dict()
    assert int(state["train_steps"]) == 2
    reloaded = tiny(disc_start=2).train()
    reloaded.load_state_dict(state)
    assert reloaded(x).logs["d_loss"].item() > 0


def test_psnr_by_hand_and_the_logged_psnr():
    target = torch.full((2, 1, 4, 4), 0.1)
    pred = torch.zeros(2, 1, 4, 4)
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0])  # MSE 0.01
    assert psnr(pred, target, data_range=2.0)[0].item() == pytest.approx(10 * math.log10(4 / 0.01))
    pred[1] = target[1]
    assert math.isinf(psnr(pred, target)[1].item())
    torch.manual_seed(0)
    model = tiny()
    x = torch.rand(3, 1, 16, 16)
    out = model(x)
    expected = psnr(((out.recon + 1) / 2).clamp(0, 1), x).mean()
    assert out.logs["psnr"].item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------ perceptual network
def test_perceptual_network_loads_from_a_user_file_and_errors_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_perceptual_network(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="perceptual_path"):
        load_perceptual_network("")
    partial = tmp_path / "partial.safetensors"
    save_state_dict_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(CheckpointError, match="no complete VGG16"):
        load_perceptual_network(partial)
    # torchvision vgg16 key names, random weights (none can be downloaded here)
    torch.manual_seed(0)
    state, channels = {}, 3
    index = 0
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3) * math.sqrt(2 / (9 * channels))
        state[f"features.{index}.bias"] = torch.zeros(item)
        channels, index = item, index + 2
    file = tmp_path / "vgg16.safetensors"
    save_state_dict_file(state, file)
    net = load_perceptual_network(file)
    assert torch.equal(getattr(net.net.slice3, "10").weight, state["features.10.weight"])
    x, y = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.allclose(net(x, x), torch.zeros(2)) and (net(x, y) > 0).all()
    # used as the VQGAN's perceptual term: logged, and not part of the tokenizer's state
    model = tiny(perceptual_weight=1.0, perceptual_path=str(file)).train()
    out = model(torch.rand(2, 1, 16, 16))
    assert out.logs["perceptual"].item() > 0
    assert not any("perceptual" in k or "slice" in k for k in model.state_dict())
    broken = tiny(perceptual_weight=1.0, perceptual_path=str(tmp_path / "gone.pth")).train()
    with pytest.raises(CheckpointError, match="gone.pth"):
        broken(torch.rand(2, 1, 16, 16))


# ------------------------------------------------------------------ taming converter
def taming_shapes(ch=32, ch_mult=(1, 2), nrb=1, attn_res=(8,), resolution=16, in_ch=3, z=8, embed_dim=4,
                  n_embed=16, ndf=8, disc_layers=2) -> dict:
    """The state-dict keys and shapes of taming-transformers' VQModel + VQLPIPSWithDiscriminator,
    enumerated from taming's constructors (independently of mimkit's modules)."""
    keys = {}

    def conv(name, cin, cout, k, bias=True):
        keys[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            keys[f"{name}.bias"] = (cout,)

    def norm(name, c):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)

    def resblock(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(prefix, c):
        resblock(f"{prefix}.mid.block_1", c, c)
        attn(f"{prefix}.mid.attn_1", c)
        resblock(f"{prefix}.mid.block_2", c, c)

    conv("encoder.conv_in", in_ch, ch, 3)
    in_mult, res = (1,) + tuple(ch_mult), resolution
    for i in range(len(ch_mult)):
        block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
        for j in range(nrb):
            resblock(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in attn_res:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != len(ch_mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            res //= 2
    mid("encoder", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z, 3)
    block_in, res = ch * ch_mult[-1], resolution // 2 ** (len(ch_mult) - 1)
    conv("decoder.conv_in", z, block_in, 3)
    mid("decoder", block_in)
    for i in reversed(range(len(ch_mult))):
        for j in range(nrb + 1):
            resblock(f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
            if res in attn_res:
                attn(f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, in_ch, 3)
    conv("quant_conv", z, embed_dim, 1)
    conv("post_quant_conv", embed_dim, z, 1)
    keys["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv("loss.discriminator.main.0", in_ch, ndf, 4)
    mult, index = 1, 2
    for n in range(1, disc_layers + 1):
        prev, mult = mult, min(2**n, 8)
        conv(f"loss.discriminator.main.{index}", ndf * prev, ndf * mult, 4, bias=False)
        bn = f"loss.discriminator.main.{index + 1}"
        for part in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{bn}.{part}"] = (ndf * mult,)
        keys[f"{bn}.num_batches_tracked"] = ()
        index += 3
    conv(f"loss.discriminator.main.{index}", ndf * mult, 1, 4)
    # taming's training-only tensors: the LPIPS network and the log-variance
    keys["loss.logvar"] = ()
    keys["loss.perceptual_loss.net.slice1.0.weight"] = (64, 3, 3, 3)
    keys["loss.perceptual_loss.lin0.model.1.weight"] = (1, 64, 1, 1)
    return keys


def synthetic_taming_state(**kwargs) -> dict:
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in taming_shapes(**kwargs).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def test_taming_checkpoint_converts_with_no_missing_or_unexpected_key(tmp_path):
    state = synthetic_taming_state()
    for key in ("encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
                "encoder.mid.block_1.conv1.weight", "encoder.mid.attn_1.proj_out.weight", "encoder.norm_out.weight",
                "decoder.up.1.upsample.conv.weight", "decoder.up.1.attn.0.q.weight", "decoder.conv_out.weight",
                "loss.discriminator.main.3.running_mean", "loss.discriminator.main.8.bias"):
        assert key in state
    file = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "global_step": 5}, file)  # Lightning's layout
    config = vqgan_config_from_taming(file, img_size=16)
    assert (config.base_channels, tuple(config.channel_mult), config.num_res_blocks, tuple(config.attn_resolutions),
            config.z_channels, config.code_dim, config.codebook_size, config.disc_layers) == \
        (32, (1, 2), 1, (8,), 8, 4, 16, 2)
    model, report = vqgan_from_taming(file, img_size=16)
    assert report.missing == [] and report.unexpected == [] and report.complete
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith(("loss.perceptual_loss", "loss.logvar")):
            assert torch.equal(own[key], value), key
    assert bool(model.quantize.initialized)
    # codes and images against taming's own forward, and a tokenizer-only release (no
    # discriminator): tests/test_taming_reference.py


def test_taming_conversion_round_trip_keeps_the_outputs(tmp_path):
    from mimkit.config import RunConfig, to_dict
    from mimkit.engine.checkpoint import save_checkpoint

    model, _ = vqgan_from_taming(synthetic_taming_state(), img_size=16)
    images = torch.rand(2, 3, 16, 16)
    codes = model.encode(images)
    decoded = model.decode(codes)
    save_checkpoint(tmp_path, 0, model, to_dict(RunConfig(method="vqgan", model=model.config)))
    again, _ = load_model(tmp_path)
    assert torch.equal(again.encode(images), codes) and torch.equal(again.decode(codes), decoded)
    assert again.fingerprint() == model.fingerprint()
    # the same weights loaded into a model without the attention blocks: a clear error
    config = vqgan_config_from_taming(synthetic_taming_state(), img_size=16)
    wrong = VQGAN(dataclasses.replace(config, attn_resolutions=()))
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_taming_vqgan(wrong, synthetic_taming_state())


def test_fingerprint_follows_the_tokenizer_weights_only():
    torch.manual_seed(0)
    model = tiny()
    base = model.fingerprint()
    with torch.no_grad():
        model.loss.discriminator.main[0].weight.add_(1.0)
        model.train_steps.add_(3)
    assert model.fingerprint() == base
    with torch.no_grad():
        model.encoder.conv_in.weight[0, 0, 0, 0] += 1e-3
    assert model.fingerprint() != base


# ------------------------------------------------------------------ training and the command line
DIGITS = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.base_channels=8",
          "model.channel_mult=[1,2]", "model.z_channels=8", "model.code_dim=4", "model.codebook_size=16",
          "model.norm_groups=4", "model.disc_channels=8", "model.disc_layers=1", "model.disc_start=3",
          "model.restart_after=1", "train.batch_size=16", "train.progress=false", "train.log_every=1", "train.threads=1"]


def read_losses(run) -> dict:
    with open(run / "log.csv", newline="") as handle:
        return {int(r["step"]): (float(r["loss"]), float(r["d_loss"])) for r in csv.DictReader(handle)}


def test_resume_continues_the_gan_schedule_exactly(tmp_path):
    from mimkit.data import build_augment, build_dataset
    from mimkit.engine.trainer import Trainer
    from mimkit.registry import build_model
    from mimkit.train import train

    overrides = DIGITS + ["train.steps=5", "train.ckpt_every=2"]
    train(load_config("vqgan_fmnist", overrides + [f"train.out_dir={tmp_path / 'full'}"]))
    part = load_config("vqgan_fmnist", overrides + [f"train.out_dir={tmp_path / 'part'}"])

    def make_trainer():
        torch.manual_seed(part.train.seed)
        model = build_model(part.method, part.model)
        return Trainer(model, part, build_dataset(part.data, channels=1), augment=build_augment(part.data))

    make_trainer().fit(stop_at=2)
    assert latest_checkpoint(tmp_path / "part").name == "step_00000002"
    make_trainer().fit(resume=True)
    full, resumed = read_losses(tmp_path / "full"), read_losses(tmp_path / "part")
    assert full == resumed
    assert full[3][1] == 0.0 and full[4][1] > 0  # the discriminator starts after 3 steps, across the resume


def test_train_reconstruct_and_eval_tokenizer_from_the_command_line(tmp_path, capsys):
    from mimkit.cli import main

    run = tmp_path / "run"
    assert main(["train", "vqgan_fmnist", *DIGITS, "train.steps=2", "train.picture_every=2", "--out", str(run)]) == 0
    assert (run / "pictures" / "reconstruction_step_00000002.png").is_file()
    out = tmp_path / "grid.png"
    assert main(["reconstruct", str(run), "--n", "3", "--scale", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 3 * 18 + 2)  # original | reconstruction, 3 rows of 16 px cells
    assert "original | reconstruction" in capsys.readouterr().out
    assert main(["eval", "tokenizer", str(run), "--limit", "64"]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "usage" in text and "perplexity" in text and "4x4 per image, codebook 16" in text
    assert main(["eval", "linear", str(run)]) == 2
    assert "mimkit eval tokenizer" in capsys.readouterr().err


def test_the_codebook_is_exempt_from_weight_decay():
    from mimkit.engine.optim import param_groups

    model = tiny()
    decay, no_decay = param_groups(model, 0.05)
    assert any(p is model.quantize.embedding.weight for p in no_decay["params"])
    assert not any(p is model.quantize.embedding.weight for p in decay["params"])
    assert any(p is model.encoder.conv_in.weight for p in decay["params"])
    ema = tiny(codebook_update="ema")  # an EMA codebook is no optimizer parameter at all
    assert not any(p is ema.quantize.embedding.weight for group in param_groups(ema, 0.05) for p in group["params"])
