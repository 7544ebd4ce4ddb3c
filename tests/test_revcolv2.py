"""RevColV2 as a masked autoencoder: its loss against the masked-patch MSE computed by hand, the
encoder blind to hidden patches, the reversible model's gradients against the plain one (float64,
dropout and drop path on), features read where the docs say, and a checkpoint round trip."""
import dataclasses

import pytest
import torch

from mimkit.config import RunConfig, load_config, to_dict
from mimkit.registry import load_model
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.errors import ConfigError
from mimkit.registry import build_model
from mimkit.methods.revcolv2 import RevColV2, RevColV2Config


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_config(**kw) -> RevColV2Config:
    base = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, num_heads=2, n_levels=3, level_depth=1,
                encoder_columns=2, decoder_columns=2, pixel_mean=(0.3,), pixel_std=(0.2,))
    base.update(kw)
    return RevColV2Config(**base)


def tiny(seed=0, **kw) -> RevColV2:
    torch.manual_seed(seed)
    model = RevColV2(tiny_config(**kw))
    with torch.no_grad():  # tokens and scales off their init values
        model.mask_tokens.normal_()
        for p in model.parameters():
            if p.ndim == 1 and p.requires_grad:
                p.add_(torch.rand_like(p) * 0.2)
    return model


def test_loss_is_the_mse_of_hidden_patches_against_normalised_patch_targets():
    for norm_pix in (False, True):
        model = tiny(norm_pix_loss=norm_pix).eval()
        images = torch.rand(2, 1, 8, 8)
        out = model(images, noise=torch.rand(2, 16))
        x = (images - 0.3) / 0.2
        patches = x.reshape(2, 1, 4, 2, 4, 2).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 4)  # (row, col, chan)
        if norm_pix:
            patches = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
        hidden = out.mask.bool()
        assert hidden.sum() == 2 * 12  # int(16 * 0.25) = 4 visible per image
        expected = ((out.pred - patches) ** 2).mean(-1)[hidden].mean()
        assert torch.allclose(out.loss, expected, atol=1e-6)


def test_encoder_sees_only_visible_patches_and_prediction_reads_level_zero():
    model = tiny().eval()
    images = torch.rand(1, 1, 8, 8)
    noise = torch.rand(1, 16)
    levels, mask, ids_restore = model.forward_encoder(model.normalize(images), 0.75, noise)
    changed = images.clone()
    hidden = model.unpatchify(mask[..., None].expand(-1, -1, 4)).bool()
    changed[hidden] = 5.0  # rewrite only the hidden pixels
    levels2, _, _ = model.forward_encoder(model.normalize(changed), 0.75, noise)
    assert len(levels) == 3 and levels[0].shape == (1, 1 + 4, 16)
    assert all(torch.equal(a, b) for a, b in zip(levels, levels2))
    decoded = model.forward_decoder(levels, ids_restore)
    assert torch.equal(model(images, noise=noise).pred, model.decoder_pred(model.decoder_norm(decoded[0]))[:, 1:])


def test_hidden_positions_enter_the_decoder_as_each_levels_mask_token():
    model = tiny().eval()
    levels, mask, ids_restore = model.forward_encoder(model.normalize(torch.rand(2, 1, 8, 8)), 0.75,
                                                      torch.rand(2, 16))
    full = model.scatter_back(levels[1], ids_restore, model.mask_tokens[1]) - model.pos_embed
    hidden = mask.bool()
    assert torch.allclose(full[:, 1:][hidden], model.mask_tokens[1].expand(int(hidden.sum()), -1))
    kept = torch.sort(torch.argsort(ids_restore, 1)[:, :4], 1).values  # visible patch ids in image order
    # visible rows carry the encoder's states in image order, cls first
    visible = full[:, 1:][~hidden].view(2, 4, 16)
    order = torch.argsort(torch.argsort(ids_restore, 1)[:, :4], 1)
    encoded = torch.gather(levels[1][:, 1:], 1, order[..., None].expand(-1, -1, 16))
    assert kept.shape == (2, 4) and torch.allclose(visible, encoded) and torch.allclose(full[:, 0], levels[1][:, 0])


def test_reversible_gradients_equal_plain_ones_with_dropout_and_drop_path():
    grads = {}
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    noise = torch.rand(2, 16)
    for reversible in (False, True):
        model = tiny(reversible=reversible, dropout=0.1, drop_path=0.2).double().train()
        torch.manual_seed(5)
        out = model(images, noise=noise)
        out.loss.backward()
        grads[reversible] = (out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert torch.equal(grads[False][0], grads[True][0])
    plain, rev = grads[False][1], grads[True][1]
    assert plain.keys() == rev.keys() and all(g is not None for g in plain.values())
    for name in plain:
        err = (plain[name] - rev[name]).norm() / plain[name].norm().clamp_min(1e-30)
        assert err < 1e-5, f"{name}: relative error {err:.2e}"


def test_features_are_the_normed_top_level_of_the_last_column_without_masking():
    images = torch.rand(3, 1, 8, 8)
    for source in ("decoder", "encoder"):
        model = tiny(features_from=source).eval()
        with torch.no_grad():
            x = model.normalize(images)
            cls = model.cls_token + model.pos_embed[:, :1]
            tokens = model.patch_embed(x) + model.pos_embed[:, 1:]  # every patch, image order
            levels = model.encoder(torch.cat([cls.expand(3, -1, -1), tokens], 1))
            if source == "decoder":
                full = [h + model.pos_embed for h in levels]  # nothing hidden: no mask token anywhere
                levels = model.decoder(full[-1], full)
            top = torch.nn.functional.layer_norm(levels[-1], (16,), eps=1e-6)
            assert torch.allclose(model.features(images, pool="cls"), top[:, 0], atol=1e-5)
            assert torch.allclose(model.features(images, pool="mean"), top[:, 1:].mean(1), atol=1e-5)


def test_reconstruct_pastes_visible_patches_back():
    model = tiny(norm_pix_loss=True).eval()
    images = torch.rand(2, 1, 8, 8)
    out = model.reconstruct(images, noise=torch.rand(2, 16))
    visible = ~model.unpatchify(out["mask"][..., None].expand(-1, -1, 4)).bool()
    assert torch.allclose(out["reconstruction"][visible], images[visible], atol=1e-6)
    assert torch.all(out["masked"][~visible] == 0.5) and torch.equal(out["original"], images)


def test_checkpoint_round_trip(tmp_path):
    model = tiny().eval()
    config = RunConfig(method="revcolv2", model=model.config)
    save_checkpoint(tmp_path, 3, model, to_dict(config))
    loaded, loaded_config = load_model(tmp_path)
    assert isinstance(loaded, RevColV2) and loaded_config.model == model.config
    images, noise = torch.rand(2, 1, 8, 8), torch.rand(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(images, noise=noise).loss, model(images, noise=noise).loss)
        assert torch.equal(loaded.features(images, "mean"), model.features(images, "mean"))
    keys = set(loaded.state_dict())
    assert {"encoder.columns.1.levels.2.alpha", "decoder.columns.0.levels.0.blocks.0.attn.qkv.weight",
            "mask_tokens", "decoder_pred.weight"} <= keys


@pytest.mark.parametrize("field, value, message", [
    ("alpha_init", 1e-4, "alpha_init"), ("features_from", "middle", "features_from"),
    ("encoder_columns", 0, "encoder_columns"), ("mask_ratio", 1.0, "mask_ratio"), ("embed_dim", 18, "embed_dim"),
    ("drop_path", 1.0, "drop_path")])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=f"model.{message}"):
        dataclasses.replace(tiny_config(), **{field: value}).validate()


def test_presets_build():
    config = load_config("revcolv2_fmnist")
    assert config.method == "revcolv2" and config.model.encoder_columns == 2
    model = build_model(config.method, config.model)
    assert model.patch_embed.num_patches == 49
    assert load_config("revcolv2_base").model.img_size == 224
