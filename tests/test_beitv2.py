"""BEiT v2: relative position index by hand, q/v-bias attention, the two-head loss by hand, mask
tokens in the full sequence, the frozen tokenizer, training end to end (the unilm converter:
tests/test_unilm_reference.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mimkit.errors import ConfigError
from mimkit.methods.beitv2 import PRESETS, BEiTv2, BEiTv2Config
from mimkit.methods.token_model import build_frozen_tokenizer
from mimkit.nn import Attention, RelativePositionBias, relative_position_index, relative_position_table_size

VQGAN = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}  # 8 px -> 4x4 codes from 16
VQKD = {"method": "vqkd", "model": {
    "img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2,
    "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "codebook_size": 12, "code_dim": 4}}


def tiny_beit(tokenizer=VQGAN, seed=0, **kw) -> BEiTv2:
    torch.manual_seed(seed)
    kw = {"tokenizer_config": tokenizer, "img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 3,
          "num_heads": 2, "early_layers": 2, "head_layers": 2, "num_mask_patches": 6, "min_mask_patches": 4,
          "drop_path": 0.0} | kw
    return BEiTv2(BEiTv2Config(**kw))


def randomize(model: BEiTv2, seed=1) -> BEiTv2:
    """Non-trivial values everywhere (biases, layer scales and the position table start as constants)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("tokenizer"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# ------------------------------------------------------------------ relative position bias
def test_relative_position_index_2x2_by_hand():
    # patches (row, col): 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1); offset (dy, dx) -> (dy + 1) * 3 + (dx + 1);
    # table rows 9 = cls -> token, 10 = token -> cls, 11 = cls -> cls
    expected = torch.tensor([[11, 9, 9, 9, 9],
                             [10, 4, 3, 1, 0],
                             [10, 5, 4, 2, 1],
                             [10, 7, 6, 4, 3],
                             [10, 8, 7, 5, 4]])
    assert torch.equal(relative_position_index((2, 2)), expected)
    assert relative_position_table_size((2, 2)) == 12 and relative_position_table_size((14, 14)) == 27 * 27 + 3
    bias = RelativePositionBias((2, 2), num_heads=2)
    assert set(bias.state_dict()) == {"relative_position_bias_table", "relative_position_index"}
    with torch.no_grad():
        bias.relative_position_bias_table.copy_(torch.arange(24.0).view(12, 2))  # row r, head h -> 2r + h
    out = bias()
    assert out.shape == (2, 5, 5)
    assert torch.equal(out[0], 2.0 * expected) and torch.equal(out[1], 2.0 * expected + 1)


def test_relative_position_index_non_square_grid():
    index = relative_position_index((2, 3))  # 6 patches, offsets 3 x 5 = 15
    # patch 5 = (1, 2) attending to patch 0 = (0, 0): dy = 1, dx = 2 -> (1 + 1) * 5 + (2 + 2) = 14
    assert index[6, 1].item() == 14 and index[1, 6].item() == 0 and index[0, 0].item() == 17
    assert index[1:, 1:].max().item() == 14 and index[1:, 1:].min().item() == 0


# ------------------------------------------------------------------ attention options
@pytest.mark.parametrize("impl", ["sdpa", "plain"])
def test_qv_bias_attention_with_additive_bias_by_hand(impl):
    torch.manual_seed(0)
    attn = Attention(8, 2, qkv_bias=False, qv_bias=True, impl=impl)
    assert set(attn.state_dict()) == {"qkv.weight", "q_bias", "v_bias", "proj.weight", "proj.bias"}
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x, bias = torch.randn(3, 5, 8), torch.randn(2, 5, 5)
    wq, wk, wv = attn.qkv.weight.split(8)
    q = (x @ wq.T + attn.q_bias).view(3, 5, 2, 4).transpose(1, 2)
    k = (x @ wk.T).view(3, 5, 2, 4).transpose(1, 2)  # no k bias
    v = (x @ wv.T + attn.v_bias).view(3, 5, 2, 4).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + bias, dim=-1)
    ref = (weights @ v).transpose(1, 2).reshape(3, 5, 8) @ attn.proj.weight.T + attn.proj.bias
    assert torch.allclose(attn(x, bias), ref, atol=1e-5)
    assert not torch.allclose(attn(x), ref, atol=1e-3)  # the bias matters


def test_default_attention_keeps_its_keys_and_options_exclude_each_other():
    assert set(Attention(8, 2).state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    with pytest.raises(ValueError, match="exclude each other"):
        Attention(8, 2, qkv_bias=True, qv_bias=True)


# ------------------------------------------------------------------ the model
def layer_norm(x, module):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


def cross_entropy_by_hand(logits, target):
    return (torch.logsumexp(logits, -1) - logits.gather(1, target[:, None])[:, 0]).mean()


def test_loss_is_the_sum_of_both_heads_cross_entropies_by_hand():
    model = randomize(tiny_beit()).eval()
    images = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 1, 4, 5]] = True
    mask[1, [10, 11, 14, 15, 6, 7]] = True
    tokens = torch.randint(0, 16, (2, 4, 4))
    out = model(images, tokens=tokens, mask=mask)

    bias = model.rel_pos_bias()
    h = model.embed(images, mask)
    for i, block in enumerate(model.blocks):
        h = block(h, bias)
        if i + 1 == 2:  # early_layers
            early = h[:, 1:]
    agg = torch.cat([h[:, :1], early], 1)
    for block in model.cls_pt_layers:
        agg = block(agg, bias)
    target = tokens.flatten(1)[mask]
    w, b = model.lm_head.weight, model.lm_head.bias  # ONE head for both branches
    ce_mim = cross_entropy_by_hand(layer_norm(h[:, 1:][mask], model.norm) @ w.T + b, target)
    ce_agg = cross_entropy_by_hand(layer_norm(agg[:, 1:][mask], model.norm) @ w.T + b, target)
    assert out.loss.item() == pytest.approx(ce_mim.item() + ce_agg.item(), rel=1e-5)
    assert out.logs["loss_mim"].item() == pytest.approx(ce_mim.item(), rel=1e-5)
    assert out.logs["loss_agg"].item() == pytest.approx(ce_agg.item(), rel=1e-5)
    assert {"accuracy", "accuracy_agg"} <= set(out.logs)
    assert not any(k.startswith(("cls_pt_norm", "cls_pt_lm_head")) for k in model.state_dict())


def test_mask_token_replaces_hidden_patches_in_the_full_sequence():
    model = randomize(tiny_beit()).eval()
    images = torch.rand(2, 1, 8, 8)
    mask = model.draw_mask(2, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 6).all()
    tokens = model.embed(images, mask)
    assert tokens.shape == (2, 17, 16)
    patches = model.patch_embed(model.normalize(images))
    assert torch.allclose(tokens[:, 1:][mask], model.mask_token[0, 0].expand(12, -1))
    assert torch.allclose(tokens[:, 1:][~mask], patches[~mask])
    assert torch.allclose(tokens[:, 0], model.cls_token[0, 0].expand(2, -1))

    seen = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    codes = torch.randint(0, 16, (2, 4, 4))
    base = model(images, tokens=codes, mask=mask).loss
    assert seen[0] == (2, 17, 16)  # cls + every patch, hidden ones included (unlike MAE)
    # pixels under the mask are never seen; a visible patch changes the predictions at hidden ones
    hidden_pixels = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    for n in range(2):
        for idx in mask[n].nonzero()[:, 0].tolist():
            r, c = divmod(idx, 4)
            hidden_pixels[n, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = True
    changed = torch.where(hidden_pixels, torch.rand_like(images), images)
    assert model(changed, tokens=codes, mask=mask).loss.item() == pytest.approx(base.item(), abs=1e-6)
    visible = torch.where(hidden_pixels, images, torch.rand_like(images))
    assert abs(model(visible, tokens=codes, mask=mask).loss.item() - base.item()) > 1e-4


def test_tokenizer_is_frozen_and_gives_the_targets():
    model = tiny_beit(tokenizer=VQKD)  # VQ-KD: encode, no decode
    model.train()
    assert not model.tokenizer.training
    before = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    images = torch.rand(3, 1, 8, 8)
    out = model(images)
    assert torch.equal(out.targets, model.tokenizer.encode(images).flatten(1))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.tokenizer.parameters())
    assert model.lm_head.weight.grad is not None and model.blocks[0].attn.q_bias.grad is not None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    after = model.tokenizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and codebook buffers untouched
    # the generative models still need decode: VQ-KD is refused there, with the reason
    with pytest.raises(ConfigError, match="has no decode"):
        build_frozen_tokenizer(VQKD)


def test_grid_mismatch_and_bad_config_are_clear_errors():
    with pytest.raises(ConfigError, match=r"tokenizer's grid \(4, 4\) differs from the ViT's patch grid \(2, 2\)"):
        tiny_beit(patch_size=4, num_mask_patches=0, min_mask_patches=1)
    with pytest.raises(ConfigError, match="model.early_layers"):
        tiny_beit(early_layers=4)
    with pytest.raises(ConfigError, match="model.min_mask_patches"):
        tiny_beit(min_mask_patches=7)


def test_features_use_the_unmasked_vit_without_the_aggregation_blocks():
    model = randomize(tiny_beit()).eval()
    images = torch.rand(3, 1, 8, 8)
    hidden, _ = model.forward_encoder(images)
    cls, mean = model.features(images, "cls"), model.features(images, "mean")
    assert torch.allclose(cls, model.norm(hidden)[:, 0]) and torch.allclose(mean, model.norm(hidden)[:, 1:].mean(1))
    with torch.no_grad():
        for p in model.cls_pt_layers.parameters():
            p.add_(1.0)
    assert torch.equal(model.features(images, "cls"), cls)


def test_init_follows_beit():
    model = tiny_beit(layer_scale=0.1)
    assert torch.equal(model.blocks[1].ls1.gamma, torch.full((16,), 0.1))
    assert not model.blocks[0].attn.q_bias.any() and not model.rel_pos_bias.relative_position_bias_table.any()
    # proj / fc2 of block i (1-based) divided by sqrt(2 i): the std shrinks with depth; N(0, 0.02)
    # truncated at +-0.02 (unilm's modeling_pretrain.py) has std ~0.54 * 0.02 = 0.0108
    std = [b.mlp.fc2.weight.std().item() * math.sqrt(2 * (i + 1)) for i, b in enumerate(model.blocks)]
    assert all(0.009 < s < 0.0125 for s in std)


def test_presets():
    base = BEiTv2Config(**{k: v for k, v in PRESETS["beitv2_vit_base_patch16"]["model"].items()})
    assert base.masked_count == 75 and base.grid_size == (14, 14) and base.early_layers == 9
    fmnist = BEiTv2Config(**PRESETS["beitv2_fmnist"]["model"])
    assert fmnist.grid_size == (7, 7) and fmnist.masked_count == 20  # round(0.4 * 49)


# ------------------------------------------------------------------ end to end
def test_trains_from_a_tokenizer_run_folder(tmp_path):
    from mimkit.config import load_config, to_dict
    from mimkit.registry import load_model
    from mimkit.engine.checkpoint import save_checkpoint
    from mimkit.registry import build_model
    from mimkit.train import train

    tok_cfg = load_config("vqkd_fmnist", ["model.embed_dim=16", "model.depth=1", "model.num_heads=2",
                                          "model.decoder_embed_dim=16", "model.decoder_num_heads=2",
                                          "model.codebook_size=16", "model.code_dim=4"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "vqkd", 0, build_model(tok_cfg.method, tok_cfg.model), to_dict(tok_cfg))
    config = load_config("beitv2_fmnist", [
        f"model.tokenizer={tmp_path / 'vqkd'}", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
        "model.early_layers=1", "model.head_layers=1", "data.limit=32", "train.steps=2", "train.batch_size=8",
        "train.ckpt_every=2", "train.progress=false", "train.threads=1", f"train.out_dir={tmp_path / 'run'}"])
    run = train(config)
    model, saved = load_model(run)
    assert saved.model.tokenizer_config["method"] == "vqkd" and model.codebook_size == 16
    assert model.features(torch.rand(2, 1, 28, 28), "mean").shape == (2, 16)
