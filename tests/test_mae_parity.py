"""MAE against the transformers reference: same weights, noise and pixels -> same loss, predictions,
mask and gradients, through every converter route (HF v5 -> mimkit, mimkit -> HF v5, mimkit -> HF
v4 -> mimkit -> HF v5), and the same fixed sin-cos position tables at initialisation."""
import inspect

import pytest
import torch

from mimkit.hub import (load_official_mae, mae_config_to_vitmae, mimkit_to_vitmae, vitmae_config_to_mae,
                        vitmae_to_mimkit)
from mimkit.methods.mae import MAE, MAEConfig

transformers = pytest.importorskip("transformers")
from transformers import ViTMAEForPreTraining  # noqa: E402

TOL = 1e-5
IDENTITY = {"pixel_mean": (0.0,) * 3, "pixel_std": (1.0,) * 3}
ATTN = {"sdpa": "sdpa", "eager": "plain"}  # transformers attn_implementation -> mimkit attn_impl


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_config(norm_pix_loss: bool = False, attn_impl: str = "sdpa", **kw) -> MAEConfig:
    fields = dict(img_size=32, patch_size=4, in_chans=3, embed_dim=64, depth=2, num_heads=4,
                  decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, mlp_ratio=4.0, norm_eps=1e-6,
                  mask_ratio=0.75, norm_pix_loss=norm_pix_loss, attn_impl=attn_impl, **IDENTITY)
    fields.update(kw)
    return MAEConfig(**fields)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter (position tables included) to random values, norms scattered around 1, so that
    a swapped or missed tensor cannot hide behind an init value."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        is_norm_weight = p.ndim == 1 and name.endswith("weight") and "norm" in name
        p.copy_(torch.randn(p.shape, generator=g) * (0.1 if is_norm_weight else 0.2) + (1.0 if is_norm_weight else 0.0))


def hf_model(config: MAEConfig, attn: str) -> "ViTMAEForPreTraining":
    return ViTMAEForPreTraining(mae_config_to_vitmae(config, attn_implementation=attn)).eval()


def paired_models(route: str, norm_pix_loss: bool, attn: str):
    """(mimkit MAE, transformers ViTMAEForPreTraining) holding the same weights, via `route`."""
    config = small_config(norm_pix_loss, ATTN[attn])
    hf, ours = hf_model(config, attn), MAE(config).eval()
    if route == "hf->mimkit (v5)":
        randomize(hf, seed=1)
        report = load_official_mae(ours, vitmae_to_mimkit(hf.state_dict()), strict=True)
        assert report.complete
    else:
        randomize(ours, seed=2)
        sd = ours.state_dict()
        if route == "mimkit->hf (v4 -> mimkit -> v5)":
            v4 = mimkit_to_vitmae(sd, scheme="v4")
            assert any(".attention.attention.query." in k for k in v4)
            sd = vitmae_to_mimkit(v4)  # scheme detected from the keys
        result = hf.load_state_dict(mimkit_to_vitmae(sd, scheme="v5"), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    return ours, hf


def qkv_grad(hf, prefix: str) -> torch.Tensor:
    att = hf.get_submodule(prefix)
    return torch.cat([att.q_proj.weight.grad, att.k_proj.weight.grad, att.v_proj.weight.grad], dim=0)


GRADS = {  # mimkit parameter -> how to read the same gradient off the transformers model
    "patch_embed.proj.weight": lambda hf: hf.vit.embeddings.patch_embeddings.projection.weight.grad,
    "cls_token": lambda hf: hf.vit.embeddings.cls_token.grad,
    "blocks.0.attn.qkv.weight": lambda hf: qkv_grad(hf, "vit.layers.0.attention"),
    "blocks.1.mlp.fc2.weight": lambda hf: hf.vit.layers[1].mlp.fc2.weight.grad,
    "norm.weight": lambda hf: hf.vit.layernorm.weight.grad,
    "mask_token": lambda hf: hf.decoder.mask_token.grad,
    "decoder_blocks.0.attn.qkv.weight": lambda hf: qkv_grad(hf, "decoder.decoder_layers.0.attention"),
    "decoder_blocks.0.norm1.weight": lambda hf: hf.decoder.decoder_layers[0].layernorm_before.weight.grad,
    "decoder_pred.weight": lambda hf: hf.decoder.decoder_pred.weight.grad,
}


# --------------------------------------------------------------------- tests
def test_transformers_forward_takes_noise():
    assert "noise" in inspect.signature(ViTMAEForPreTraining.forward).parameters


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pix", "normpix"])
@pytest.mark.parametrize("route", ["hf->mimkit (v5)", "mimkit->hf (v5)", "mimkit->hf (v4 -> mimkit -> v5)"])
def test_loss_pred_mask_and_grads_match_transformers(route, norm_pix_loss, attn):
    ours, hf = paired_models(route, norm_pix_loss, attn)
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(3, 3, 32, 32, generator=g)  # identity normalisation: the same tensor feeds both
    noise = torch.rand(3, 64, generator=g)

    theirs = hf(pixel_values=pixels, noise=noise)
    out = ours(pixels, noise=noise)
    assert out.mask.sum() == 3 * 48  # 75% of 64 patches hidden
    assert torch.equal(out.mask, theirs.mask)
    torch.testing.assert_close(out.pred, theirs.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(out.loss, theirs.loss, atol=TOL, rtol=0)

    out.loss.backward()
    theirs.loss.backward()
    params = dict(ours.named_parameters())
    for name, read in GRADS.items():
        ref = read(hf)
        torch.testing.assert_close(params[name].grad, ref, atol=TOL, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def hf_sincos_tables(config: MAEConfig):
    """transformers' own sin-cos tables (encoder, decoder) for `config`.

    transformers 5.x leaves both tables at zero in a freshly built ViTMAEForPreTraining (its
    embeddings init is skipped once the patch projection is flagged as initialised, and
    _init_weights zeroes decoder_pos_embed), so the init methods are re-run with the flags cleared.
    """
    hf = ViTMAEForPreTraining(mae_config_to_vitmae(config))
    emb, dec = hf.vit.embeddings, hf.decoder
    if not emb.position_embeddings.any() or not dec.decoder_pos_embed.any():
        for t in (emb.patch_embeddings.projection, emb.patch_embeddings.projection.weight, emb.cls_token,
                  emb.position_embeddings, dec.decoder_pos_embed, dec.mask_token):
            t._is_hf_initialized = False
        emb.initialize_weights()
        dec.initialize_weights(emb.patch_embeddings.num_patches)
    return emb.position_embeddings.detach(), dec.decoder_pos_embed.detach()


@pytest.mark.parametrize("dims", [(32, 4, 64, 32), (28, 4, 96, 64)], ids=["8x8", "7x7"])
def test_sincos_tables_match_transformers(dims):
    img, patch, dim, dec_dim = dims
    config = small_config(img_size=img, patch_size=patch, embed_dim=dim, decoder_embed_dim=dec_dim)
    enc, dec = hf_sincos_tables(config)
    assert enc.abs().sum() > 0 and dec.abs().sum() > 0
    ours = MAE(config)
    torch.testing.assert_close(ours.pos_embed.detach(), enc, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.decoder_pos_embed.detach(), dec, atol=1e-6, rtol=0)


def test_config_mapping_round_trip():
    config = small_config(norm_pix_loss=True, mask_ratio=0.6)
    hf = mae_config_to_vitmae(config)
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == (64, 2, 4, 256)
    assert (hf.decoder_hidden_size, hf.decoder_num_hidden_layers, hf.decoder_num_attention_heads,
            hf.decoder_intermediate_size) == (32, 1, 4, 128)
    assert (hf.image_size, hf.patch_size, hf.num_channels, hf.layer_norm_eps) == (32, 4, 3, 1e-6)
    assert (hf.mask_ratio, hf.norm_pix_loss, hf.hidden_act, hf.qkv_bias) == (0.6, True, "gelu", True)
    back = vitmae_config_to_mae(hf, attn_impl="sdpa", **IDENTITY)
    assert back == config
    assert vitmae_config_to_mae(hf.to_dict(), attn_impl="sdpa", **IDENTITY) == config


def test_config_mapping_refuses_what_mae_cannot_express():
    from mimkit.errors import ConfigError

    hf = mae_config_to_vitmae(small_config())
    hf.decoder_intermediate_size = 64  # decoder mlp ratio 2 != encoder's 4
    with pytest.raises(ConfigError, match="mlp_ratio"):
        vitmae_config_to_mae(hf)
