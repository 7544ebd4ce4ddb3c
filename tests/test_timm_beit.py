"""mimkit BEiTv2 encoder <-> timm Beit (beitv2_* layout): the exported key set and shapes written
down from timm/models/beit.py, the round trip back into a BEiTv2, and a hand-written forward of
timm's Beit over the exported dict that must give mimkit's features."""
import pytest
import torch
import torch.nn.functional as F

from mimkit.errors import CheckpointError, ConfigError
from mimkit.hub import beitv2_to_timm_beit, converter_table, load_timm_beit, timm_beit_to_beitv2
from test_beitv2 import randomize, tiny_beit


def timm_beit_shapes(d, depth, heads, mlp, grid, chans, patch, pool="token", abs_pos=False, layer_scale=True) -> dict:
    """timm Beit(num_classes=0, use_rel_pos_bias=True) keys and shapes, from timm/models/beit.py."""
    patches, table = grid[0] * grid[1], (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
    norm = "norm" if pool == "token" else "fc_norm"
    shapes = {"cls_token": (1, 1, d), "patch_embed.proj.weight": (d, chans, patch, patch), "patch_embed.proj.bias": (d,),
              f"{norm}.weight": (d,), f"{norm}.bias": (d,)}
    if abs_pos:
        shapes["pos_embed"] = (1, 1 + patches, d)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                   b + "attn.q_bias": (d,), b + "attn.v_bias": (d,), b + "attn.relative_position_bias_table": (table, heads),
                   b + "attn.relative_position_index": (1 + patches, 1 + patches), b + "attn.proj.weight": (d, d),
                   b + "attn.proj.bias": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                   b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,), b + "mlp.fc2.weight": (d, mlp),
                   b + "mlp.fc2.bias": (d,)}
        if layer_scale:
            shapes |= {b + "gamma_1": (d,), b + "gamma_2": (d,)}
    return shapes


def timm_beit_cls_features(sd, x, heads, eps=1e-6):
    """timm Beit(global_pool="token").forward_head(forward_features(x), pre_logits=True), written out:
    x (N, C, H, W) already normalised -> (N, D)."""
    d, _, p, _ = sd["patch_embed.proj.weight"].shape
    h = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(len(h), -1, -1), h], dim=1)
    if "pos_embed" in sd:
        h = h + sd["pos_embed"]
    n, length, _ = h.shape
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("blocks.")})):
        b = f"blocks.{i}."
        bias = sd[b + "attn.relative_position_bias_table"][sd[b + "attn.relative_position_index"].view(-1)]
        bias = bias.view(length, length, heads).permute(2, 0, 1)  # (H, 1 + L, 1 + L)
        y = F.layer_norm(h, (d,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        qkv_bias = torch.cat([sd[b + "attn.q_bias"], torch.zeros(d), sd[b + "attn.v_bias"]])
        q, k, v = F.linear(y, sd[b + "attn.qkv.weight"], qkv_bias).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(n, length, d), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = h + sd[b + "gamma_1"] * y
        y = F.layer_norm(h, (d,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        y = F.linear(F.gelu(F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"],
                     sd[b + "mlp.fc2.bias"])
        h = h + sd[b + "gamma_2"] * y
    return F.layer_norm(h, (d,), sd["norm.weight"], sd["norm.bias"], eps)[:, 0]


@pytest.mark.parametrize("pool, abs_pos, layer_scale", [("token", False, 0.1), ("avg", True, 0.0)])
def test_export_has_the_timm_beit_keys_and_shapes(pool, abs_pos, layer_scale):
    model = tiny_beit(abs_pos_embed=abs_pos, layer_scale=layer_scale)
    timm_sd = beitv2_to_timm_beit(model.state_dict(), global_pool=pool)
    expected = timm_beit_shapes(16, 3, 2, 64, (4, 4), 1, 2, pool, abs_pos, layer_scale > 0)
    assert {k: tuple(v.shape) for k, v in timm_sd.items()} == expected
    shared = model.rel_pos_bias
    for i in range(3):  # every block holds a copy of the one shared table
        assert torch.equal(timm_sd[f"blocks.{i}.attn.relative_position_bias_table"], shared.relative_position_bias_table)
        assert torch.equal(timm_sd[f"blocks.{i}.attn.relative_position_index"], shared.relative_position_index)


def test_round_trip_into_a_fresh_beitv2_is_exact():
    model = randomize(tiny_beit()).eval()
    timm_sd = beitv2_to_timm_beit(model.state_dict())
    other = tiny_beit(seed=3).eval()
    report = load_timm_beit(other, timm_sd, strict=True)
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == 1 + 2 + 2 + 15 * 3 + 2
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith(("cls_token", "patch_embed", "rel_pos",
                                                                              "blocks.", "norm."))}
    assert all(torch.equal(other.state_dict()[k], v) for k, v in encoder.items())
    images = torch.rand(3, 1, 8, 8)
    assert torch.equal(other.features(images, "cls"), model.features(images, "cls"))
    assert not torch.equal(other.lm_head.weight, model.lm_head.weight)  # not in timm: left as it was
    # global_pool="avg" stores the final norm as fc_norm; a classifier head is reported, not loaded
    avg = beitv2_to_timm_beit(model.state_dict(), "avg") | {"head.weight": torch.zeros(5, 16), "head.bias": torch.zeros(5)}
    report = load_timm_beit(tiny_beit(seed=4), avg)
    assert report.missing == [] and report.unexpected == ["head.weight", "head.bias"]
    assert torch.equal(timm_beit_to_beitv2(avg)["norm.weight"], model.norm.weight)


def test_hand_written_timm_beit_forward_equals_mimkit_features():
    model = randomize(tiny_beit()).eval()
    with torch.no_grad():  # randomize leaves small values: make the relative bias and layer scale matter
        model.rel_pos_bias.relative_position_bias_table.mul_(5)
    images = torch.rand(4, 1, 8, 8)
    timm_sd = beitv2_to_timm_beit(model.state_dict())
    reference = timm_beit_cls_features(timm_sd, model.normalize(images), heads=2)
    torch.testing.assert_close(reference, model.features(images, "cls"), rtol=1e-5, atol=1e-5)
    # the bias matters: with it zeroed the features move far beyond the tolerance
    no_bias = {k: torch.zeros_like(v) if k.endswith("bias_table") else v for k, v in timm_sd.items()}
    assert (timm_beit_cls_features(no_bias, model.normalize(images), heads=2) - reference).abs().max() > 1e-2


def test_bad_timm_dicts_raise_clear_errors():
    model = randomize(tiny_beit())
    timm_sd = beitv2_to_timm_beit(model.state_dict())
    fine_tuned = dict(timm_sd)
    fine_tuned["blocks.2.attn.relative_position_bias_table"] = timm_sd["blocks.2.attn.relative_position_bias_table"] + 1
    with pytest.raises(CheckpointError, match="blocks.2.attn.relative_position_bias_table differs"):
        load_timm_beit(tiny_beit(), fine_tuned)
    with pytest.raises(CheckpointError, match="shape mismatch for 'blocks.0.mlp.fc1.weight'"):
        load_timm_beit(tiny_beit(mlp_ratio=2.0), timm_sd)
    with pytest.raises(CheckpointError, match="missing"):
        load_timm_beit(tiny_beit(), {k: v for k, v in timm_sd.items() if k != "blocks.1.gamma_1"}, strict=True)
    with pytest.raises(ConfigError, match="global_pool"):
        beitv2_to_timm_beit(model.state_dict(), global_pool="cls")
    with pytest.raises(CheckpointError, match="not a BEiTv2"):
        beitv2_to_timm_beit({"cls_token": torch.zeros(1, 1, 16)})


def test_converter_table_row_round_trips():
    row = converter_table()["timm-beit"]
    sd = randomize(tiny_beit()).state_dict()
    back = row.import_fn(row.export_fn(sd))
    assert row.method == "beitv2" and row.loader == "load_timm_beit"
    assert set(back) == {k for k in sd if k.startswith(("cls_token", "patch_embed", "rel_pos", "blocks.", "norm."))}
    assert all(torch.equal(back[k], sd[k]) for k in back)
