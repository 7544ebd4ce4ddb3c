"""MAE's objective and picture helpers against hand-computed cases."""
import torch

from mimkit.methods.mae import MAE, MAEConfig


def tiny(**kw) -> MAE:
    base = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                decoder_depth=1, decoder_num_heads=2, pixel_mean=(0.0,), pixel_std=(1.0,))
    base.update(kw)
    torch.manual_seed(0)
    return MAE(MAEConfig(**base))


def test_loss_is_mse_on_hidden_patches_only():
    model = tiny()
    x = torch.rand(2, 1, 8, 8)
    noise = torch.rand(2, 16)
    out = model(x, noise=noise)
    target = model.patchify(x)
    hidden = out.mask.bool()
    expected = ((out.pred - target) ** 2).mean(-1)[hidden].mean()
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert out.mask.sum().item() == 2 * 12  # int(16 * 0.25) = 4 kept per image


def test_norm_pix_target_uses_unbiased_variance():
    model = tiny(norm_pix_loss=True)
    x = torch.rand(1, 1, 8, 8)
    t = model.target(x)[0, 0]
    patch = x[0, 0, :2, :2].reshape(-1)
    assert torch.allclose(t, (patch - patch.mean()) / (patch.var(unbiased=True) + 1e-6) ** 0.5, atol=1e-5)


def test_encoder_sees_only_visible_patches():
    model = tiny()
    x = torch.rand(1, 1, 8, 8)
    noise = torch.rand(1, 16)
    latent, mask, _ = model.forward_encoder(x, 0.75, noise)
    changed = x.clone()
    hidden = model.unpatchify(mask[..., None].expand(-1, -1, 4)).bool()
    changed[hidden] = 5.0  # rewrite only hidden pixels
    latent2, _, _ = model.forward_encoder(changed, 0.75, noise)
    assert latent.shape == (1, 1 + 4, 16) and torch.equal(latent, latent2)


def test_reconstruct_pastes_visible_patches_back_and_unnormalises():
    model = tiny(norm_pix_loss=True, pixel_mean=(0.3,), pixel_std=(0.2,))
    x = torch.rand(2, 1, 8, 8)
    out = model.reconstruct(x, noise=torch.rand(2, 16))
    visible = ~model.unpatchify(out["mask"][..., None].expand(-1, -1, 4)).bool()
    assert torch.allclose(out["reconstruction"][visible], x[visible], atol=1e-6)
    assert torch.all(out["masked"][~visible] == 0.5) and torch.equal(out["original"], x)


def test_official_key_names():
    keys = set(tiny().state_dict())
    for key in ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed.proj.weight",
                "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.weight", "decoder_embed.weight",
                "decoder_blocks.0.norm1.weight", "decoder_norm.bias", "decoder_pred.weight"]:
        assert key in keys
    assert not any(k.startswith("pixel_") for k in keys)


def test_features_pools():
    model = tiny().eval()
    x = torch.rand(3, 1, 8, 8)
    latent, _, _ = model.forward_encoder(model.normalize(x), 0.0)  # patches in a random order
    # the cls token attends over the patches in another order: equal up to float summation order
    assert torch.allclose(model.features(x, "cls"), latent[:, 0], atol=1e-5)
    assert torch.allclose(model.features(x, "mean"), latent[:, 1:].mean(1), atol=1e-5)


def test_features_leave_the_global_rng_alone():
    model = tiny().eval()
    before = torch.get_rng_state()
    model.features(torch.zeros(2, 1, 8, 8))
    assert torch.equal(torch.get_rng_state(), before)
