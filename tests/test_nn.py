"""Building blocks against hand-computed cases and torch reference ops."""
import math

import pytest
import torch
import torch.nn.functional as F

from mimkit.nn import (Attention, Block, DropPath, PatchEmbed, gather_tokens, patchify, plain_attention,
                       random_masking, sincos_2d, unpatchify)


def test_sincos_2d_matches_formula_and_column_first_layout():
    dim, gh, gw = 8, 2, 3
    table = sincos_2d(dim, (gh, gw), cls_token=True)
    assert table.shape == (1 + gh * gw, dim)
    assert torch.all(table[0] == 0)
    # position (row 1, col 2) is index 1 + 1*3 + 2; first half encodes the column
    row, col = 1, 2
    omega = [1.0, 1.0 / 100.0]  # 1 / 10000^(k / (dim/4)) for k = 0, 1 with dim/4 = 2
    expected = ([math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
                + [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega])
    assert torch.allclose(table[1 + row * gw + col], torch.tensor(expected), atol=1e-6)


def test_patch_embed_equals_strided_conv_for_non_square_multichannel():
    torch.manual_seed(0)
    embed = PatchEmbed((12, 20), 4, in_chans=5, embed_dim=7)
    x = torch.randn(3, 5, 12, 20)
    ref = F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=4).flatten(2).transpose(1, 2)
    assert embed.grid_size == (3, 5) and embed.num_patches == 15
    assert torch.allclose(embed(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbed(30, 4)


def test_patchify_unpatchify_round_trip_and_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 6, 12)
    # patch 0 of sample 0 in (row, col, channel) order
    expected = torch.stack([x[0, :, r, c] for r in range(2) for c in range(2)]).reshape(-1)
    assert torch.equal(p[0, 0], expected)
    assert torch.equal(unpatchify(p, 2, (2, 3), 3), x)


def test_random_masking_hand_case():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    out = random_masking(x, 0.5, noise=noise)
    assert out.ids_keep.tolist() == [[1, 3], [0, 2]]
    assert out.mask.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    assert out.kept[..., 0].tolist() == [[1, 3], [4, 6]]
    # [kept; hidden] gathered with ids_restore gives back the original order
    hidden = gather_tokens(x, torch.argsort(noise, 1)[:, 2:])
    assert torch.equal(gather_tokens(torch.cat([out.kept, hidden], 1), out.ids_restore), x)


def test_random_masking_generator_is_reproducible_and_checks_ratio():
    x = torch.randn(3, 10, 4)
    a = random_masking(x, 0.75, generator=torch.Generator().manual_seed(1))
    b = random_masking(x, 0.75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.mask, b.mask) and a.kept.shape == (3, 2, 4)
    assert a.mask.sum().item() == 3 * 8
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        random_masking(x, 1.0)


def test_plain_and_sdpa_attention_agree():
    torch.manual_seed(0)
    attn = Attention(16, 4, impl="sdpa")
    x = torch.randn(2, 9, 16)
    out_sdpa = attn(x)
    attn.impl = "plain"
    assert torch.allclose(attn(x), out_sdpa, atol=1e-5)
    q, k, v = torch.randn(3, 2, 4, 9, 4).unbind(0)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    assert torch.allclose(plain_attention(q, k, v), ref, atol=1e-6)


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    y = dp(torch.ones(1000, 3, 2))
    per_sample = y.reshape(1000, -1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    dp.eval()
    assert torch.equal(dp(torch.ones(4, 2)), torch.ones(4, 2))


def test_block_layer_scale_zero_is_identity_and_keys():
    block = Block(8, 2, layer_scale=0.0)
    x = torch.randn(2, 5, 8)
    assert torch.equal(block(x), x)
    keys = set(Block(8, 2).state_dict())
    assert {"norm1.weight", "attn.qkv.weight", "attn.proj.bias", "mlp.fc1.weight", "mlp.fc2.bias"} <= keys


def test_onednn_probe_leaves_the_global_rng_alone():
    import importlib

    linear_module = importlib.import_module("mimkit.nn.linear")  # the package re-exports a function named linear

    linear_module._probed = None
    state = torch.get_rng_state()
    linear_module.onednn_available()
    assert torch.equal(torch.get_rng_state(), state)
