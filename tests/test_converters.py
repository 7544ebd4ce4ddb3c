"""The converter table: every row's round trip on synthetic checkpoints with the official names
(zero missing/unexpected keys, equal tensors and outputs), MAE/MAGE encoders to timm's vit_*
layout (key names and shapes; their forwards: tests/test_mae_official_reference.py), official
MAGE against a forward pass written here from LTH14/mage models_mage.py, and `mimkit convert`.
(MAE <-> a real transformers ViTMAEForPreTraining: tests/test_mae_parity.py.)"""
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mimkit.cli import main
from mimkit.hub import (converter_table, load_official_mage, mae_to_timm_vit, mage_to_timm_vit,
                        mimkit_to_mage_official, timm_vit_to_mae)
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.mage import MAGE, MAGEConfig
from mimkit.tokenizers.vqgan import BOOKKEEPING

TOKENIZER = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}  # 8 px -> 4x4 = 16 tokens from 16 codes
C, L = 16, 16


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_mae(seed=0) -> MAE:
    torch.manual_seed(seed)
    return MAE(MAEConfig(img_size=8, patch_size=2, in_chans=3, embed_dim=16, depth=2, num_heads=2,
                         decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)).eval()


def tiny_mage(seed=0) -> MAGE:
    torch.manual_seed(seed)
    model = MAGE(MAGEConfig(tokenizer_config=TOKENIZER, embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=8,
                            decoder_depth=1, decoder_num_heads=2, dropout=0.0))
    with torch.no_grad():  # zero-initialised tables would hide swapped rows
        for name, p in model.named_parameters():
            if not name.startswith("tokenizer."):
                p.normal_(0, 0.5) if p.ndim > 1 else p.uniform_(-0.5, 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- the table
def test_every_row_round_trips_on_its_method(tmp_path):
    models = {"mae": tiny_mae().state_dict(), "mage": tiny_mage().state_dict()}
    table = converter_table()
    assert {"mae-official", "vitmae-v5", "vitmae-v4", "taming-vqgan", "mage-official", "timm-vit-mae"} <= set(table)
    checked = 0
    for name, row in table.items():
        if row.method not in models or not (row.import_fn and row.export_fn):
            continue
        sd = {k: v for k, v in models[row.method].items() if not k.startswith("tokenizer.")}
        back = row.import_fn(row.export_fn(sd))
        assert back.keys() == sd.keys(), name
        assert all(torch.equal(back[k], sd[k]) for k in sd), name
        checked += 1
    assert checked == 4  # mae-official, vitmae-v5, vitmae-v4, mage-official


def test_convert_cli_lists_the_table_and_converts_a_file(tmp_path, capsys):
    assert main(["convert", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in converter_table())
    sd = tiny_mae().state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "mae.safetensors"))
    assert main(["convert", "vitmae-v4", str(tmp_path / "mae.safetensors"), str(tmp_path / "hf.safetensors"),
                 "--export"]) == 0
    # importing writes a model folder (tests/test_convert_folders.py); exporting takes one too
    assert main(["convert", "vitmae-v4", str(tmp_path / "hf.safetensors"), str(tmp_path / "back"),
                 "--set", "num_heads=2", "--set", "decoder_num_heads=2"]) == 0
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert main(["convert", "vitmae-v4", str(tmp_path / "back"), str(tmp_path / "hf2.safetensors"), "--export"]) == 0
    hf, hf2 = load_file(str(tmp_path / "hf.safetensors")), load_file(str(tmp_path / "hf2.safetensors"))
    assert hf.keys() == hf2.keys() and all(torch.equal(hf[k], hf2[k]) for k in hf)
    assert main(["convert", "timm-vit-mae", str(tmp_path / "mae.safetensors"), str(tmp_path / "x.safetensors")]) == 2
    assert "no import direction" in capsys.readouterr().err


# transformers: the MAE export loaded into a real ViTMAEForPreTraining (strict, zero missing/unexpected
# keys) with equal loss, predictions, mask and gradients under the same noise is tests/test_mae_parity.py


# -------------------------------------------------------------------------------- timm
def timm_vit_shapes(d, depth, hidden, patches, chans, patch) -> dict:
    """timm VisionTransformer(num_classes=0) keys and shapes, written down from
    timm/models/vision_transformer.py (class token, no layer scale, no fc_norm)."""
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + patches, d),
              "patch_embed.proj.weight": (d, chans, patch, patch), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(depth):
        for part, shape in (("norm1", (d,)), ("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)), ("norm2", (d,)),
                            ("mlp.fc1", (hidden, d)), ("mlp.fc2", (d, hidden))):
            shapes[f"blocks.{i}.{part}.weight"] = shape
            shapes[f"blocks.{i}.{part}.bias"] = (shape[0],)
    return shapes


def test_mae_and_mage_export_to_the_timm_vit_layout():
    mae = tiny_mae()
    timm_sd = mae_to_timm_vit(mae.state_dict())
    assert {k: tuple(v.shape) for k, v in timm_sd.items()} == timm_vit_shapes(16, 2, 32, 16, 3, 2)
    other = tiny_mae(seed=1)
    other.load_state_dict(timm_vit_to_mae(timm_sd | {"head.weight": torch.zeros(5, 16)}, other.state_dict()))
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(other.features(images), mae.features(images))
    mage_sd = mage_to_timm_vit(tiny_mage().state_dict())
    expected = {k: v for k, v in timm_vit_shapes(16, 2, 64, L, 1, 2).items() if not k.startswith("patch_embed")}
    expected |= {"norm_pre.weight": (16,), "norm_pre.bias": (16,)}  # MAGE's embedding LayerNorm (pre_norm=True)
    assert {k: tuple(v.shape) for k, v in mage_sd.items()} == expected
    # both exports against a timm forward written from vision_transformer.py: tests/test_mae_official_reference.py


# -------------------------------------------------------------------------------- MAGE
def official_mage_keys(depth, decoder_depth) -> set:
    """The state-dict keys of LTH14/mage MaskedGenerativeEncoderViT (without vqgan.*)."""
    block = [f"{p}.{w}" for p in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for w in
             ("weight", "bias")]
    keys = {"token_emb.word_embeddings.weight", "token_emb.position_embeddings.weight", "token_emb.LayerNorm.weight",
            "token_emb.LayerNorm.bias", "token_emb.position_ids", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "cls_token", "pos_embed", "norm.weight", "norm.bias", "decoder_embed.weight", "decoder_embed.bias",
            "mask_token", "decoder_pos_embed", "decoder_pos_embed_learned", "decoder_norm.weight", "decoder_norm.bias",
            "decoder_pred.weight", "decoder_pred.bias", "mlm_layer.fc.weight", "mlm_layer.fc.bias",
            "mlm_layer.ln.weight", "mlm_layer.ln.bias", "mlm_layer.bias"}
    keys |= {f"blocks.{i}.{k}" for i in range(depth) for k in block}
    return keys | {f"decoder_blocks.{i}.{k}" for i in range(decoder_depth) for k in block}


def official_block(x, sd, prefix, heads, eps):
    """timm/MAGE Block: x + attn(norm1(x)); x + mlp(norm2(x)) with softmax(q k^T / sqrt(hd)) v."""
    n, length, d = x.shape
    h = F.layer_norm(x, (d,), sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], eps)
    qkv = F.linear(h, sd[prefix + "attn.qkv.weight"], sd[prefix + "attn.qkv.bias"])
    q, k, v = qkv.reshape(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
    x = x + F.linear((attn @ v).transpose(1, 2).reshape(n, length, d), sd[prefix + "attn.proj.weight"],
                     sd[prefix + "attn.proj.bias"])
    h = F.layer_norm(x, (d,), sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], eps)
    h = F.linear(F.gelu(F.linear(h, sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"])),
                 sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])
    return x + h


def official_mage_logits(sd, tokens, heads, decoder_heads, depth, decoder_depth, eps=1e-6):
    """models_mage.py forward_encoder/forward_decoder without dropping: tokens (N, L) with the
    official [MASK] id -> logits (N, L, C) (the official sampler's logits[:, 1:, :codebook_size])."""
    vocab = sd["token_emb.word_embeddings.weight"]
    size = vocab.shape[0] - 1001
    ids = torch.cat([torch.full((len(tokens), 1), size + 1100 - 1024), tokens], 1)
    x = vocab[ids] + sd["token_emb.position_embeddings.weight"][: ids.shape[1]]
    x = F.layer_norm(x, x.shape[-1:], sd["token_emb.LayerNorm.weight"], sd["token_emb.LayerNorm.bias"], 1e-6)
    for i in range(depth):
        x = official_block(x, sd, f"blocks.{i}.", heads, eps)
    x = F.layer_norm(x, x.shape[-1:], sd["norm.weight"], sd["norm.bias"], eps)
    x = F.linear(x, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    masked = torch.cat([torch.zeros(len(tokens), 1, dtype=torch.bool), tokens == vocab.shape[0] - 1], 1)
    x = torch.where(masked.unsqueeze(-1), x[:, :1], x) + sd["decoder_pos_embed_learned"]
    for i in range(decoder_depth):
        x = official_block(x, sd, f"decoder_blocks.{i}.", decoder_heads, eps)
    x = F.layer_norm(x, x.shape[-1:], sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps)
    h = F.gelu(F.linear(x, sd["mlm_layer.fc.weight"], sd["mlm_layer.fc.bias"]))
    h = F.layer_norm(h, h.shape[-1:], sd["mlm_layer.ln.weight"], sd["mlm_layer.ln.bias"], 1e-5)
    logits = h @ vocab.T + sd["mlm_layer.bias"]
    return logits[:, 1:, :size]


def test_mage_official_key_set_load_and_logits():
    model = tiny_mage()
    official = mimkit_to_mage_official(model.state_dict(), img_size=8, in_chans=1)
    assert set(official) == official_mage_keys(2, 1)
    assert official["token_emb.word_embeddings.weight"].shape == (C + 1001, 16)
    assert official["mlm_layer.bias"].shape == (1, 1, C + 1001)
    fresh = tiny_mage(seed=5)
    report = load_official_mage(fresh, official)
    assert not report.missing and not report.unexpected
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("tokenizer.")}  # no vqgan.* given
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())
    tokens = torch.randint(0, C, (3, L))
    tokens[:, ::3] = C  # some [MASK] inputs
    with torch.no_grad():
        ours = model.token_logits(tokens)
        theirs = official_mage_logits(official, tokens.masked_fill(tokens == C, C + 1000), 2, 2, 2, 1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert ours.abs().max() > 1  # not a trivially small output


def test_official_mage_from_a_file_with_vqgan_keys(tmp_path):
    model = tiny_mage()
    official = mimkit_to_mage_official(model.state_dict(), img_size=8, in_chans=1)
    # a MAGE over a taming VQGAN: its vqgan.* (quant_conv, attention) goes through the taming route
    # (the released MaskGIT VQGAN route: tests/test_maskgit_vqgan.py)
    official |= {f"vqgan.{k}": v for k, v in model.tokenizer.state_dict().items() if k not in BOOKKEEPING}
    torch.save({"model": official, "epoch": 1600}, tmp_path / "mage-vit.pth")
    fresh = tiny_mage(seed=3)
    report = load_official_mage(fresh, tmp_path / "mage-vit.pth")
    assert report.complete and "tokenizer: " in " ".join(report.notes)
    for key, value in model.state_dict().items():
        if key.removeprefix("tokenizer.") not in BOOKKEEPING:
            assert torch.equal(fresh.state_dict()[key], value), key
