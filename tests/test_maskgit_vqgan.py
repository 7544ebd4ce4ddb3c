"""The MaskGIT VQGAN (mimkit/tokenizers/maskgit_vqgan.py) against a forward pass written here with
plain torch.nn.functional calls from MAGE's PyTorch port (LTH14/mage taming/modules/diffusionmodules/
model.py, taming/models/vqgan.py, config/vqgan.yaml); strict loading of MAGE's vqgan.*; a whole
official MAGE-B key set (433 keys, shrunk widths) converted into a model folder that samples; and
the MaskGIT loss parts (entropy loss, R1) on hand-computed cases."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_converters import official_mage_keys, official_mage_logits

from mimkit.cli import main
from mimkit.errors import CheckpointError
from mimkit.hub import load_official_mage, mimkit_to_mage_official
from mimkit.hub.mage_vqgan import maskgit_vqgan_from_mage
from mimkit.methods.mage import MAGE, MAGEConfig
from mimkit.registry import from_pretrained
from mimkit.tokenizers.maskgit_vqgan import BOOKKEEPING, MaskGITVQGAN, MaskGITVQGANConfig
from mimkit.tokenizers.maskgit_vqgan_loss import entropy_loss, r1_penalty

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

IMAGENET = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, in_channels=3, z=256, n_embed=1024)


# ------------------------------------------------------------------ the official layout, written from model.py
def official_vqgan_shapes(ch, ch_mult, num_res_blocks, in_channels, z, n_embed) -> dict:
    """key -> shape of MAGE's VQModel(ddconfig) state dict (double_z False, no temb, resamp_with_conv
    False in the Encoder and True in the Decoder, as the port's defaults give)."""
    shapes = {"encoder.conv_in.weight": (ch, in_channels, 3, 3)}

    def resblock(prefix, cin, cout):
        shapes.update({f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
                       f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.norm2.weight": (cout,),
                       f"{prefix}.norm2.bias": (cout,), f"{prefix}.conv2.weight": (cout, cout, 3, 3)})
        if cin != cout:
            shapes[f"{prefix}.nin_shortcut.weight"] = (cout, cout, 1, 1)  # Conv2d(out_channels, out_channels)

    in_mult = (1,) + tuple(ch_mult)
    for i in range(len(ch_mult)):
        block_in = ch * in_mult[i]
        for j in range(num_res_blocks):
            resblock(f"encoder.down.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
    for name in ("block_1", "block_2"):
        resblock(f"encoder.mid.{name}", block_in, block_in)
    shapes.update({"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,),
                   "encoder.conv_out.weight": (z, block_in, 1, 1), "encoder.conv_out.bias": (z,)})
    block_in = ch * ch_mult[-1]
    shapes.update({"decoder.conv_in.weight": (block_in, z, 3, 3), "decoder.conv_in.bias": (block_in,)})
    for name in ("block_1", "block_2"):
        resblock(f"decoder.mid.{name}", block_in, block_in)
    for i in reversed(range(len(ch_mult))):
        for j in range(num_res_blocks):
            resblock(f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
        if i != 0:
            shapes.update({f"decoder.up.{i}.upsample.conv.weight": (block_in, block_in, 3, 3),
                           f"decoder.up.{i}.upsample.conv.bias": (block_in,)})
    shapes.update({"decoder.norm_out.weight": (block_in,), "decoder.norm_out.bias": (block_in,),
                   "decoder.conv_out.weight": (in_channels, block_in, 3, 3), "decoder.conv_out.bias": (in_channels,),
                   "quantize.embedding.weight": (n_embed, z)})
    return shapes


def seeded_state(shapes: dict, seed: int) -> dict:
    """Random values of a sensible scale: convs ~ 1/sqrt(fan_in), norms around 1, small biases."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if len(shape) == 4:
            x = x / (shape[1] * shape[2] * shape[3]) ** 0.5
        elif "norm" in key and key.endswith("weight"):
            x = 1 + 0.1 * x
        elif len(shape) == 1:
            x = 0.1 * x
        sd[key] = x
    return sd


def gn(x, sd, prefix):
    return F.group_norm(x, 32, sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-6)


def swish(x):
    return x * torch.sigmoid(x)


def resblock(x, sd, prefix):
    h = F.conv2d(swish(gn(x, sd, prefix + ".norm1")), sd[prefix + ".conv1.weight"], padding=1)
    h = F.conv2d(swish(gn(h, sd, prefix + ".norm2")), sd[prefix + ".conv2.weight"], padding=1)
    if prefix + ".nin_shortcut.weight" in sd:
        x = F.conv2d(h, sd[prefix + ".nin_shortcut.weight"])  # the port's `x = self.nin_shortcut(h)`
    return x + h


def reference_encode(sd, images, levels, num_res_blocks):
    """images (N, C, H, W) in [0, 1] -> codes (N, h, w): Encoder.forward + VectorQuantizer2's argmin."""
    h = F.conv2d(images, sd["encoder.conv_in.weight"], padding=1)
    for i in range(levels):
        for j in range(num_res_blocks):
            h = resblock(h, sd, f"encoder.down.{i}.block.{j}")
        if i != levels - 1:
            h = F.avg_pool2d(h, 2, 2)
    h = resblock(resblock(h, sd, "encoder.mid.block_1"), sd, "encoder.mid.block_2")
    h = F.conv2d(swish(gn(h, sd, "encoder.norm_out")), sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"])
    z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    e = sd["quantize.embedding.weight"]
    d = z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * z @ e.t()
    return d.argmin(1).view(h.shape[0], h.shape[2], h.shape[3])


def reference_decode(sd, codes, levels, num_res_blocks):
    """codes (N, h, w) -> images (N, C, H, W), unclamped: embedding lookup + Decoder.forward."""
    h = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)
    h = F.conv2d(h, sd["decoder.conv_in.weight"], sd["decoder.conv_in.bias"], padding=1)
    h = resblock(resblock(h, sd, "decoder.mid.block_1"), sd, "decoder.mid.block_2")
    for i in reversed(range(levels)):
        for j in range(num_res_blocks):
            h = resblock(h, sd, f"decoder.up.{i}.block.{j}")
        if i != 0:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = F.conv2d(h, sd[f"decoder.up.{i}.upsample.conv.weight"], sd[f"decoder.up.{i}.upsample.conv.bias"],
                         padding=1)
    return F.conv2d(swish(gn(h, sd, "decoder.norm_out")), sd["decoder.conv_out.weight"], sd["decoder.conv_out.bias"],
                    padding=1)


def own_keys(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if k not in BOOKKEEPING and not k.startswith("loss.")}


# ------------------------------------------------------------------ tests
def test_imagenet_layout_is_the_official_key_set():
    with torch.device("meta"):
        model = MaskGITVQGAN(MaskGITVQGANConfig())  # the defaults: vqgan_config.py / config/vqgan.yaml
    official = official_vqgan_shapes(**IMAGENET)
    assert len(official) == 168
    assert own_keys(model) == official


def test_mage_vqgan_loads_strictly_and_matches_the_reference_forward():
    small = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, in_channels=3, z=8, n_embed=16)
    sd = seeded_state(official_vqgan_shapes(**small), seed=0)
    model, report = maskgit_vqgan_from_mage(sd, img_size=16)
    assert report.complete and len(report.loaded) == len(sd)
    assert model.config.channel_mult == (1, 2, 2) and model.grid_size == (4, 4)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    codes = model.encode(images)
    expected = reference_encode(sd, images, 3, 2)
    assert torch.equal(codes, expected) and len(codes.unique()) > 3
    with torch.no_grad():
        torch.testing.assert_close(model.decode_codes(codes), reference_decode(sd, codes, 3, 2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.decode(codes), reference_decode(sd, codes, 3, 2).clamp(0, 1), rtol=1e-5,
                                   atol=1e-5)


def tiny_official_mage(seed=0) -> MAGE:
    """A mimkit MAGE with MAGE-B's depths (12 + 8) and the ImageNet VQGAN's structure (5 levels,
    2 blocks) at shrunk widths: 32 px -> 2x2 tokens from 16 codes."""
    torch.manual_seed(seed)
    tokenizer = {"method": "maskgit_vqgan", "model": {"img_size": 32, "in_chans": 3, "base_channels": 32,
                                                      "channel_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2,
                                                      "codebook_size": 16, "code_dim": 8}}
    model = MAGE(MAGEConfig(tokenizer_config=tokenizer, embed_dim=16, depth=12, num_heads=2, decoder_embed_dim=8,
                            decoder_depth=8, decoder_num_heads=2, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("tokenizer."):
                p.normal_(0, 0.5) if p.ndim > 1 else p.uniform_(-0.5, 0.5)
    return model.eval()


def official_file(tmp_path):
    model = tiny_official_mage()
    sd = seeded_state(official_vqgan_shapes(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, in_channels=3, z=8,
                                            n_embed=16), seed=2)
    official = mimkit_to_mage_official(model.state_dict(), img_size=32, in_chans=3)
    official = {k: v for k, v in official.items() if not k.startswith("vqgan.")} | {f"vqgan.{k}": v for k, v in sd.items()}
    torch.save({"model": official, "epoch": 1600}, tmp_path / "mage-vit-base.pth")
    return official, sd


def test_whole_official_mage_b_key_set_converts_into_a_folder_that_samples(tmp_path):
    official, vqgan = official_file(tmp_path)
    expected = official_mage_keys(12, 8) | {f"vqgan.{k}" for k in official_vqgan_shapes(**IMAGENET)}
    assert len(expected) == 433 and set(official) == expected  # the key set of the real MAGE-B file
    out = tmp_path / "mage"
    assert main(["convert", "mage-official", str(tmp_path / "mage-vit-base.pth"), str(out), "--set", "num_heads=2",
                 "--set", "decoder_num_heads=2"]) == 0
    model = from_pretrained(out)
    assert model.tokenizer.config.img_size == 32 and model.config.depth == 12
    tokens = torch.randint(0, 16, (3, 4), generator=torch.Generator().manual_seed(0))
    tokens[:, ::3] = 16  # some [MASK] inputs
    with torch.no_grad():
        ours = model.token_logits(tokens)
    theirs = official_mage_logits(official, tokens.masked_fill(tokens == 16, 16 + 1000), 2, 2, 12, 8)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    codes = torch.randint(0, 16, (2, 2, 2))
    with torch.no_grad():
        torch.testing.assert_close(model.tokenizer.decode(codes), reference_decode(vqgan, codes, 5, 2).clamp(0, 1),
                                   rtol=1e-5, atol=1e-5)
    assert main(["generate", str(out), "--n", "2", "--steps", "2", "--no-progress", "--out",
                 str(tmp_path / "samples.png")]) == 0
    assert (tmp_path / "samples.png").stat().st_size > 0
    weights = load_file(out / "model.safetensors")
    assert {k for k in weights if k.startswith("tokenizer.encoder.")}  # the tokenizer travels with the model


@pytest.mark.parametrize("change, named", [("drop", "decoder.conv_out.bias"), ("add", "encoder.down.0.attn.0.q.weight")])
def test_a_missing_or_extra_vqgan_key_is_a_one_line_error_naming_it(tmp_path, change, named):
    official, _ = official_file(tmp_path)
    if change == "drop":
        del official["vqgan." + named]
    else:
        official["vqgan." + named] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")) as err:
        load_official_mage(tiny_official_mage(seed=1), official)
    assert "\n" not in str(err.value)


def test_entropy_loss_on_hand_computed_cases():
    # two vectors, equal affinity to both codes: sample entropy log 2, batch entropy -log(0.5 + 1e-5)
    flat = torch.zeros(2, 2)
    assert entropy_loss(flat, 0.01).item() == pytest.approx(torch.log(torch.tensor(2.0)).item()
                                                            + torch.log(torch.tensor(0.5 + 1e-5)).item(), abs=1e-6)
    # confident and spread over 4 codes: sample entropy ~0, batch entropy ~log 4 -> about -log 4
    confident = torch.eye(4) * 10.0
    assert entropy_loss(confident, 0.01).item() == pytest.approx(-torch.log(torch.tensor(4.0)).item(), abs=1e-4)


def test_r1_penalty_of_a_linear_discriminator_is_the_squared_weight_norm():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)

    def disc(x):  # D(x) = <w, x> per image: grad_x = w for every image
        return (x * w).sum((1, 2, 3)).unsqueeze(1)

    logits, penalty = r1_penalty(disc, torch.rand(3, 1, 2, 2))
    assert penalty.item() == pytest.approx(1 + 4 + 0.25 + 9)
    penalty.backward()  # the penalty trains the discriminator: d ||w||^2 / dw = 2w
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_a_training_step_runs_and_the_gan_terms_switch_on():
    model = MaskGITVQGAN(MaskGITVQGANConfig(img_size=8, in_chans=1, base_channels=32, channel_mult=(1, 2),
                                            num_res_blocks=1, codebook_size=8, code_dim=4, disc_channels=8,
                                            disc_layers=1, disc_start=1))
    images = torch.rand(2, 1, 8, 8)
    first = model(images)
    assert first.logs["d_loss"] == 0 and first.logs["entropy"] != 0
    first.loss.backward()
    assert all(p.grad is None for p in model.loss.discriminator.parameters())  # GAN off at step 0
    model.zero_grad()
    second = model(images)
    second.loss.backward()
    assert second.logs["d_loss"] > 0 and second.logs["r1"] >= 0
    assert model.loss.discriminator.main[0].weight.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
