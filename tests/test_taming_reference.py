"""The taming-transformers converter against taming's own forward: a VQModel state dict with the
official key names (small config: one attention resolution, channel changes with nin_shortcut,
conv biases, quant_conv / post_quant_conv, plus discriminator and LPIPS tensors) saved as a
Lightning .ckpt and loaded with mimkit.hub.taming gives the pre-quantisation vectors, codes,
codebook loss and decoded images of a torch.nn.functional forward written in this file from
taming/modules/diffusionmodules/model.py, taming/modules/vqvae/quantize.py (VectorQuantizer2) and
taming/models/vqgan.py (to 1e-5, on [-1, 1] inputs; mimkit's [0, 1] images map by 2x - 1)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mimkit.hub.taming import load_taming_vqgan, vqgan_config_from_taming, vqgan_from_taming
from mimkit.tokenizers.vqgan import VQGAN
from test_vqgan import taming_shapes

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# taming ddconfig: ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[8], resolution=16,
# in_channels=out_ch=3, z_channels=8, double_z=False; n_embed=16, embed_dim=4
CONFIG = dict(ch=32, ch_mult=(1, 2), nrb=1, attn_res=(8,), resolution=16, in_ch=3, z=8, embed_dim=4, n_embed=16)
LEVELS = len(CONFIG["ch_mult"])


def taming_state(seed=0) -> dict:
    """Seeded random values for every key of the VQModel + its loss (conv weights ~ 1/sqrt(fan in),
    GroupNorm scales around 1, non-zero biases, a codebook on the scale of the encoder output)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in taming_shapes(**CONFIG).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key == "quantize.embedding.weight":
            state[key] = torch.randn(shape, generator=g)
        elif len(shape) == 4:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1] * shape[2] * shape[3])
        elif ".norm" in key and key.endswith(".weight"):
            state[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.2 * torch.randn(shape, generator=g)
    return state


# ----------------------------------------------- taming's forward, written with torch.nn.functional
def normalize(x, sd, name):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)  # Normalize: 32 groups


def conv(x, sd, name, stride=1, padding=None):
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], stride, w.shape[-1] // 2 if padding is None else padding)


def swish(x):
    return x * torch.sigmoid(x)


def resnet_block(x, sd, p):
    h = conv(swish(normalize(x, sd, f"{p}.norm1")), sd, f"{p}.conv1")
    h = conv(swish(normalize(h, sd, f"{p}.norm2")), sd, f"{p}.conv2")  # dropout: eval
    if f"{p}.nin_shortcut.weight" in sd:
        x = conv(x, sd, f"{p}.nin_shortcut")
    return x + h


def attn_block(x, sd, p):
    h = normalize(x, sd, f"{p}.norm")
    q, k, v = (conv(h, sd, f"{p}.{n}") for n in "qkv")
    b, c, hh, ww = q.shape
    w = torch.bmm(q.reshape(b, c, hh * ww).permute(0, 2, 1), k.reshape(b, c, hh * ww)) * int(c) ** -0.5
    w = F.softmax(w, dim=2)
    h = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + conv(h, sd, f"{p}.proj_out")


def has_attn(sd, p):
    return f"{p}.attn.0.q.weight" in sd  # len(self.down[i].attn) > 0


def mid(h, sd, p):
    h = resnet_block(h, sd, f"{p}.mid.block_1")
    h = attn_block(h, sd, f"{p}.mid.attn_1")
    return resnet_block(h, sd, f"{p}.mid.block_2")


def taming_encoder(x, sd):
    hs = [conv(x, sd, "encoder.conv_in")]
    for i in range(LEVELS):
        for j in range(CONFIG["nrb"]):
            h = resnet_block(hs[-1], sd, f"encoder.down.{i}.block.{j}")
            if has_attn(sd, f"encoder.down.{i}"):
                h = attn_block(h, sd, f"encoder.down.{i}.attn.{j}")
            hs.append(h)
        if i != LEVELS - 1:  # Downsample(with_conv): pad right/bottom by one, 3x3 stride 2, no padding
            hs.append(conv(F.pad(hs[-1], (0, 1, 0, 1), mode="constant", value=0), sd,
                           f"encoder.down.{i}.downsample.conv", stride=2, padding=0))
    h = mid(hs[-1], sd, "encoder")
    return conv(swish(normalize(h, sd, "encoder.norm_out")), sd, "encoder.conv_out")


def taming_decoder(z, sd):
    h = mid(conv(z, sd, "decoder.conv_in"), sd, "decoder")
    for i in reversed(range(LEVELS)):
        for j in range(CONFIG["nrb"] + 1):
            h = resnet_block(h, sd, f"decoder.up.{i}.block.{j}")
            if has_attn(sd, f"decoder.up.{i}"):
                h = attn_block(h, sd, f"decoder.up.{i}.attn.{j}")
        if i != 0:  # Upsample(with_conv): nearest x2, then a 3x3 conv
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"decoder.up.{i}.upsample.conv")
    return conv(swish(normalize(h, sd, "decoder.norm_out")), sd, "decoder.conv_out")


def taming_quantize(z, sd):
    """VectorQuantizer2.forward (legacy=True, beta=0.25, no remap) values: (z_q, loss, indices (b, h, w))."""
    e = sd["quantize.embedding.weight"]
    zz = z.permute(0, 2, 3, 1).contiguous()
    flat = zz.view(-1, e.shape[1])
    d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * torch.einsum("bd,dn->bn", flat, e.t())
    idx = d.argmin(1)
    z_q = e[idx].view(zz.shape)
    loss = torch.mean((z_q - zz) ** 2) + 0.25 * torch.mean((z_q - zz) ** 2)
    return z_q.permute(0, 3, 1, 2), loss, idx.view(zz.shape[:3])


def taming_vqmodel(x, sd):
    """VQModel.encode / decode on [-1, 1] images: pre-quantisation h, codes, emb_loss, reconstruction."""
    h = conv(taming_encoder(x, sd), sd, "quant_conv")
    z_q, loss, codes = taming_quantize(h, sd)
    return h, codes, loss, taming_decoder(conv(z_q, sd, "post_quant_conv"), sd)


def taming_decode_code(codes, sd):
    z_q = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)  # get_codebook_entry
    return taming_decoder(conv(z_q, sd, "post_quant_conv"), sd)


# ------------------------------------------------------------------------------- the tests
def test_taming_checkpoint_gives_taming_codes_and_images(tmp_path):
    state = taming_state()
    file = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "global_step": 5, "epoch": 1}, file)
    model, report = vqgan_from_taming(file, img_size=16)
    assert report.complete and not report.missing and not report.unexpected
    assert tuple(model.config.attn_resolutions) == (8,) and model.config.norm_groups == 32
    assert len(model.encoder.down[1].attn) == 1 and len(model.encoder.down[0].attn) == 0

    torch.manual_seed(1)
    images = torch.rand(3, 3, 16, 16)
    x = images * 2 - 1  # taming's input range
    with torch.no_grad():
        h, codes, emb_loss, rec = taming_vqmodel(x, state)
        vectors = model.encode_features(images)
        ours = model.encode(images)
        q = model.quantize(vectors)
        decoded = model.decode_codes(ours)
        out = model(images)
    torch.testing.assert_close(vectors, h.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    assert ours.shape == (3, 8, 8) and torch.equal(ours, codes)
    assert len(codes.unique()) >= 6  # many codes in use: a swapped or transposed codebook would show
    torch.testing.assert_close(q.loss, emb_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decoded, rec, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.recon, rec, rtol=1e-5, atol=1e-5)  # the training forward's reconstruction
    assert rec.abs().max() > 0.5 and rec.std() > 0.1  # not a trivially small output
    # decode() is taming's custom_to_pil mapping: (x + 1) / 2 clamped to [0, 1]
    pictures = model.decode(ours)
    torch.testing.assert_close(pictures, ((rec + 1) / 2).clamp(0, 1), rtol=1e-5, atol=1e-5)
    assert ((pictures > 0) & (pictures < 1)).float().mean() > 0.5  # mostly unclamped

    # decoding arbitrary codes (VQModel.decode_code) as well
    codes = torch.randint(0, CONFIG["n_embed"], (2, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.decode_codes(codes), taming_decode_code(codes, state), rtol=1e-5, atol=1e-5)


def test_load_into_a_model_built_from_the_config_matches_too():
    state = taming_state(seed=4)
    model = VQGAN(vqgan_config_from_taming(state, img_size=16)).eval()
    report = load_taming_vqgan(model, {k: v for k, v in state.items() if not k.startswith("loss.")})
    assert report.complete and any("no discriminator" in note for note in report.notes)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, codes, _, rec = taming_vqmodel(images * 2 - 1, state)
        assert torch.equal(model.encode(images), codes)
        torch.testing.assert_close(model.decode_codes(codes), rec, rtol=1e-5, atol=1e-5)
