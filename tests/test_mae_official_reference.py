"""The MAE converters against the official forwards: a facebookresearch/mae MaskedAutoencoderViT
state dict (official key names, the fixed sin-cos pos_embed / decoder_pos_embed, small config)
saved as the official .pth and converted with `mimkit convert mae-official` gives the loss, pred
and mask, for given noise and with and without norm_pix_loss, of a torch.nn.functional forward
written in this file from models_mae.py (random_masking, forward_encoder, forward_decoder,
forward_loss; timm Block); the `timm-vit-mae` export gives mimkit's encoder tokens and features,
and the `timm-vit-mage` export MAGE's encoder tokens and mean features, through a timm
VisionTransformer forward written from timm/models/vision_transformer.py (all to 1e-5)."""
import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mimkit.cli import main
from mimkit.hub import converter_table, mae_from_official
from mimkit.registry import load_model
from test_converters import official_block, tiny_mage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# models_mae.MaskedAutoencoderViT(img_size=8, patch_size=2, in_chans=3, embed_dim=16, depth=2,
# num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2,
# norm_layer=partial(nn.LayerNorm, eps=1e-6))
IMG, P, D, DEPTH, HEADS, DD, DDEPTH, DHEADS, HIDDEN = 8, 2, 16, 2, 2, 8, 1, 2, 2
L = (IMG // P) ** 2
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # main_pretrain.py's transforms.Normalize


# ------------------------------------------------------------- util/pos_embed.py (numpy, float64)
def sincos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def official_sincos(dim, grid):
    """get_2d_sincos_pos_embed(dim, grid, cls_token=True) as the float32 (1, 1 + grid^2, dim) buffer."""
    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), 0)
    g = g.reshape(2, 1, grid, grid)
    emb = np.concatenate([sincos_1d(dim // 2, g[0]), sincos_1d(dim // 2, g[1])], axis=1)
    emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def official_state(seed=0) -> dict:
    """Every key of MaskedAutoencoderViT.state_dict() with seeded values (the positions: sin-cos)."""
    g = torch.Generator().manual_seed(seed)

    def linear(name, cin, cout):
        sd[f"{name}.weight"] = torch.randn(cout, cin, generator=g) / math.sqrt(cin)
        sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=g)

    def norm(name, dim):
        sd[f"{name}.weight"] = 1 + 0.2 * torch.randn(dim, generator=g)
        sd[f"{name}.bias"] = 0.2 * torch.randn(dim, generator=g)

    def block(name, dim):
        norm(f"{name}.norm1", dim)
        linear(f"{name}.attn.qkv", dim, 3 * dim)
        linear(f"{name}.attn.proj", dim, dim)
        norm(f"{name}.norm2", dim)
        linear(f"{name}.mlp.fc1", dim, HIDDEN * dim)
        linear(f"{name}.mlp.fc2", HIDDEN * dim, dim)

    sd = {"cls_token": 0.5 * torch.randn(1, 1, D, generator=g), "pos_embed": official_sincos(D, IMG // P)}
    sd["patch_embed.proj.weight"] = torch.randn(D, 3, P, P, generator=g) / math.sqrt(3 * P * P)
    sd["patch_embed.proj.bias"] = 0.1 * torch.randn(D, generator=g)
    for i in range(DEPTH):
        block(f"blocks.{i}", D)
    norm("norm", D)
    linear("decoder_embed", D, DD)
    sd["mask_token"] = 0.5 * torch.randn(1, 1, DD, generator=g)
    sd["decoder_pos_embed"] = official_sincos(DD, IMG // P)
    for i in range(DDEPTH):
        block(f"decoder_blocks.{i}", DD)
    norm("decoder_norm", DD)
    linear("decoder_pred", DD, P * P * 3)
    return sd


# ------------------------------------------------------------------- models_mae.py, functionally
def layer_norm(x, sd, name, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def patch_embed(x, sd):
    """timm PatchEmbed: conv p x p stride p, flatten to (N, L, D)."""
    return F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)


def random_masking(x, mask_ratio, noise):
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x_masked = torch.gather(x, 1, ids_shuffle[:, :len_keep].unsqueeze(-1).repeat(1, 1, d))
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    return x_masked, torch.gather(mask, 1, ids_restore), ids_restore


def forward_encoder(x, sd, mask_ratio, noise):
    x = patch_embed(x, sd) + sd["pos_embed"][:, 1:, :]
    x, mask, ids_restore = random_masking(x, mask_ratio, noise)
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1, :]).expand(x.shape[0], -1, -1)
    x = torch.cat((cls, x), dim=1)
    for i in range(DEPTH):
        x = official_block(x, sd, f"blocks.{i}.", HEADS, 1e-6)
    return layer_norm(x, sd, "norm"), mask, ids_restore


def forward_decoder(x, sd, ids_restore):
    x = F.linear(x, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    mask_tokens = sd["mask_token"].repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1, :], x_], dim=1) + sd["decoder_pos_embed"]
    for i in range(DDEPTH):
        x = official_block(x, sd, f"decoder_blocks.{i}.", DHEADS, 1e-6)
    x = F.linear(layer_norm(x, sd, "decoder_norm"), sd["decoder_pred.weight"], sd["decoder_pred.bias"])
    return x[:, 1:, :]


def patchify(imgs):
    h = w = imgs.shape[2] // P
    x = imgs.reshape(imgs.shape[0], 3, h, P, w, P)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], h * w, P * P * 3)


def forward_loss(imgs, pred, mask, norm_pix_loss):
    target = patchify(imgs)
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def official_mae(imgs, sd, mask_ratio, noise, norm_pix_loss):
    """MaskedAutoencoderViT.forward with torch.rand(N, L) replaced by `noise`: (loss, pred, mask)."""
    latent, mask, ids_restore = forward_encoder(imgs, sd, mask_ratio, noise)
    pred = forward_decoder(latent, sd, ids_restore)
    return forward_loss(imgs, pred, mask, norm_pix_loss), pred, mask


def normalized(images):
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ------------------------------------------------------------ timm vision_transformer.py, functionally
def timm_vit_tokens(sd, patch_tokens, heads, depth, pre_norm=False):
    """VisionTransformer.forward_features from after patch_embed (class_token=True,
    no_embed_class=False: concat cls, then add pos_embed; norm_pre; blocks; norm)."""
    x = torch.cat([sd["cls_token"].expand(len(patch_tokens), -1, -1), patch_tokens], dim=1) + sd["pos_embed"]
    if pre_norm:
        x = layer_norm(x, sd, "norm_pre")
    for i in range(depth):
        x = official_block(x, sd, f"blocks.{i}.", heads, 1e-6)
    return layer_norm(x, sd, "norm")


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_official_mae_checkpoint_gives_the_official_loss_pred_and_mask(tmp_path, norm_pix_loss):
    sd = official_state()
    args = argparse.Namespace(model="mae_vit_tiny_patch2", input_size=IMG, mask_ratio=0.75,
                              norm_pix_loss=norm_pix_loss)
    torch.save({"model": sd, "epoch": 799, "args": args}, tmp_path / "checkpoint-799.pth")
    assert main(["convert", "mae-official", str(tmp_path / "checkpoint-799.pth"), str(tmp_path / "mae"),
                 "--set", f"num_heads={HEADS}", "--set", f"decoder_num_heads={DHEADS}"]) == 0
    model, _ = load_model(tmp_path / "mae")
    model.eval()
    assert model.config.norm_pix_loss == norm_pix_loss and model.config.mask_ratio == 0.75
    # the loaded positions are the official fixed sin-cos tables, which mimkit's own init also makes
    assert torch.equal(model.pos_embed, sd["pos_embed"])
    fresh = type(model)(model.config)
    torch.testing.assert_close(fresh.pos_embed, sd["pos_embed"], rtol=0, atol=1e-6)
    torch.testing.assert_close(fresh.decoder_pos_embed, sd["decoder_pos_embed"], rtol=0, atol=1e-6)

    g = torch.Generator().manual_seed(1)
    images, noise = torch.rand(3, 3, IMG, IMG, generator=g), torch.rand(3, L, generator=g)
    with torch.no_grad():
        out = model(images, noise=noise)
        loss, pred, mask = official_mae(normalized(images), sd, 0.75, noise, norm_pix_loss)
    assert torch.equal(out.mask, mask) and int(mask.sum()) == 3 * 12
    torch.testing.assert_close(out.pred, pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)
    assert pred.abs().max() > 1 and loss > 0.1  # not a trivially small output
    # another mask ratio through the same forward
    with torch.no_grad():
        out = model(images, noise=noise, mask_ratio=0.5)
        loss, pred, mask = official_mae(normalized(images), sd, 0.5, noise, norm_pix_loss)
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.pred, pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)


def test_timm_vit_mae_export_gives_the_encoder_features_through_a_timm_forward(tmp_path):
    model, report = mae_from_official(official_state(seed=2), num_heads=HEADS, decoder_num_heads=DHEADS)
    assert report.complete
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "mae.safetensors"))
    assert main(["convert", "timm-vit-mae", str(tmp_path / "mae.safetensors"), str(tmp_path / "vit.safetensors"),
                 "--export"]) == 0
    timm_sd = load_file(str(tmp_path / "vit.safetensors"))
    assert not any(k.startswith(("decoder", "mask_token")) for k in timm_sd)
    images = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens = timm_vit_tokens(timm_sd, patch_embed(normalized(images), timm_sd), HEADS, DEPTH)
        torch.testing.assert_close(model.encode_unmasked(images), tokens, rtol=1e-5, atol=1e-5)
        # global_pool="token", num_classes=0: forward() is the normed class token
        torch.testing.assert_close(model.features(images), tokens[:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.features(images, pool="mean"), tokens[:, 1:].mean(1), rtol=1e-5, atol=1e-5)
    assert tokens.abs().max() > 1


def test_timm_vit_mage_export_gives_the_encoder_through_a_timm_forward():
    model = tiny_mage(seed=4)
    with torch.no_grad():  # LayerNorm scales away from one, so a skipped norm would show
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight") and not name.startswith("tokenizer."):
                p.copy_(1 + 0.3 * torch.randn(p.shape))
    timm_sd = converter_table()["timm-vit-mage"].export_fn(model.state_dict())
    assert {"norm_pre.weight", "norm_pre.bias", "cls_token", "pos_embed"} <= set(timm_sd)
    tokens = torch.randint(0, 16, (3, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        embedded = model.embed.tokens.weight[tokens]  # what timm's patch embedding would hand over
        theirs = timm_vit_tokens(timm_sd, embedded, 2, 2, pre_norm=True)
        ours = model.encode(tokens, None)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert theirs.abs().max() > 1
    # global_pool="avg", fc_norm=False: the mean of the normed image tokens is MAGE.features
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        codes = model.tokenizer.encode(images).flatten(1)
        pooled = timm_vit_tokens(timm_sd, model.embed.tokens.weight[codes], 2, 2, pre_norm=True)[:, 1:].mean(1)
        torch.testing.assert_close(model.features(images), pooled, rtol=1e-5, atol=1e-5)
