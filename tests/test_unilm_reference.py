"""microsoft/unilm BEiT v2 converters against reference forwards written here from the official code
(beit2/modeling_pretrain.py, modeling_finetune.py, modeling_vqkd.py, norm_ema_quantizer.py) with plain
torch.nn.functional calls on state dicts under the official key names (small seeded random weights):
the MIM logits of both heads and the loss of a BEiT v2 loaded with load_unilm_beitv2, the export back
to unilm names, the VQ-KD codes, decoded teacher features and loss after vqkd_from_unilm, and the
converters' errors."""
import pytest
import torch
import torch.nn.functional as F

from mimkit.errors import CheckpointError
from mimkit.hub import load_unilm_beitv2
from mimkit.hub.beitv2_unilm import beitv2_to_unilm
from mimkit.hub.vqkd_unilm import vqkd_config_from_unilm, vqkd_from_unilm
from mimkit.methods.beitv2 import BEiTv2, BEiTv2Config
from mimkit.tokenizers.teacher import Teacher

torch.set_num_threads(1)
EPS = 1e-6  # partial(nn.LayerNorm, eps=1e-6) in every unilm BEiT v2 / VQ-KD model
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # --imagenet_default_mean_and_std


# ------------------------------------------------------------------ the official building blocks
def unilm_relative_position_index(grid):
    """modeling_finetune.RelativePositionBias's index, step by step: pairwise (dy, dx) shifted to start at
    0, dy times (2 w - 1), summed; row 0 (cls -> token) n - 3, column 0 (token -> cls) n - 2, [0, 0] n - 1."""
    h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # 2, L
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # L, L, 2
    rel[:, :, 0] += h - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    n = (2 * h - 1) * (2 * w - 1) + 3
    index = torch.zeros((h * w + 1,) * 2, dtype=rel.dtype)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = n - 3
    index[0:, 0] = n - 2
    index[0, 0] = n - 1
    return index


def unilm_rel_pos_bias(table, index):
    """RelativePositionBias.forward: (heads, 1 + L, 1 + L)."""
    size = index.shape[0]
    return table[index.view(-1)].view(size, size, -1).permute(2, 0, 1).contiguous()


def unilm_block(x, sd, prefix, heads, rel_pos_bias=None):
    """modeling_finetune.Block + Attention (qkv bias [q_bias, 0, v_bias], q scaled by head_dim^-0.5,
    the shared bias added to the logits; layer scale gamma_1 / gamma_2 when the block has them) and
    Mlp (fc1, exact GELU, fc2)."""
    p = lambda k: sd[f"{prefix}.{k}"]  # noqa: E731
    n, length, dim = x.shape
    h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps=EPS)
    bias = torch.cat([p("attn.q_bias"), torch.zeros_like(p("attn.v_bias")), p("attn.v_bias")])
    qkv = F.linear(h, p("attn.qkv.weight"), bias).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
    if rel_pos_bias is not None:
        attn = attn + rel_pos_bias
    y = F.linear((attn.softmax(-1) @ v).transpose(1, 2).reshape(n, length, -1), p("attn.proj.weight"),
                 p("attn.proj.bias"))
    gamma_1, gamma_2 = sd.get(f"{prefix}.gamma_1"), sd.get(f"{prefix}.gamma_2")
    x = x + (y if gamma_1 is None else gamma_1 * y)
    h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps=EPS)
    y = F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return x + (y if gamma_2 is None else gamma_2 * y)


def numbered(sd, prefix):
    """How many `prefix`.N.* modules the state dict holds."""
    i = 0
    while f"{prefix}.{i}.norm1.weight" in sd:
        i += 1
    return i


def rand(g):
    return lambda *shape: torch.randn(*shape, generator=g) * 0.3


def block_tensors(r, prefix, dim, layer_scale):
    """One modeling_finetune.Block's state dict (qkv_bias=True: q_bias / v_bias, a bias-free qkv;
    window_size None: no table of its own; gamma_1 / gamma_2 when init_values > 0)."""
    out = {f"{prefix}.norm1.weight": 1 + r(dim), f"{prefix}.norm1.bias": r(dim),
           f"{prefix}.attn.q_bias": r(dim), f"{prefix}.attn.v_bias": r(dim),
           f"{prefix}.attn.qkv.weight": r(3 * dim, dim),
           f"{prefix}.attn.proj.weight": r(dim, dim), f"{prefix}.attn.proj.bias": r(dim),
           f"{prefix}.norm2.weight": 1 + r(dim), f"{prefix}.norm2.bias": r(dim),
           f"{prefix}.mlp.fc1.weight": r(4 * dim, dim), f"{prefix}.mlp.fc1.bias": r(4 * dim),
           f"{prefix}.mlp.fc2.weight": r(dim, 4 * dim), f"{prefix}.mlp.fc2.bias": r(dim)}
    if layer_scale:
        out[f"{prefix}.gamma_1"], out[f"{prefix}.gamma_2"] = 0.5 + r(dim), 0.5 + r(dim)
    return out


# ------------------------------------------------------------------ BEiT v2 pretraining model
def unilm_beitv2_state_dict(dim=16, heads=2, depth=3, grid=(4, 4), patch=2, chans=3, vocab=12, head_layers=2,
                            abs_pos=False, seed=0):
    """VisionTransformerForMaskedImageModeling(CLS)'s state dict as run_beitv2_pretraining.py builds it:
    use_shared_rel_pos_bias (one rel_pos_bias table for all blocks), init_values > 0 (gamma_1 / gamma_2),
    shared_lm_head (no cls_pt_norm / cls_pt_lm_head), pos_embed only with --abs_pos_emb; head_layers=0
    gives the plain model (no cls_pt_layers). No tokenizer: it is a separate model there."""
    r = rand(torch.Generator().manual_seed(seed))
    num_rel = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
    sd = {"cls_token": r(1, 1, dim), "mask_token": r(1, 1, dim),
          "patch_embed.proj.weight": r(dim, chans, patch, patch), "patch_embed.proj.bias": r(dim),
          "rel_pos_bias.relative_position_bias_table": r(num_rel, heads),
          "rel_pos_bias.relative_position_index": unilm_relative_position_index(grid),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim), "lm_head.weight": r(vocab, dim), "lm_head.bias": r(vocab)}
    if abs_pos:
        sd["pos_embed"] = r(1, grid[0] * grid[1] + 1, dim)
    for i in range(depth):
        sd.update(block_tensors(r, f"blocks.{i}", dim, layer_scale=True))
    for i in range(head_layers):
        sd.update(block_tensors(r, f"cls_pt_layers.{i}", dim, layer_scale=True))
    return sd


def unilm_beitv2_forward(sd, x, bool_masked_pos, heads, early_layers):
    """forward(x, bool_masked_pos) of the pretraining model on normalised images: the list
    [lm_head(x[mask]), lm_head(x_cls_pt[mask])] of the cls_pt model, [lm_head(x[mask])] without
    cls_pt_layers; plus the normed tokens (N, 1 + L, D) of the main branch."""
    patch = sd["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    n, length, dim = x.shape
    w = bool_masked_pos.unsqueeze(-1).type_as(x)
    x = x * (1 - w) + sd["mask_token"].expand(n, length, -1) * w
    x = torch.cat([sd["cls_token"].expand(n, -1, -1), x], dim=1)
    if "pos_embed" in sd:
        x = x + sd["pos_embed"]
    bias = unilm_rel_pos_bias(sd["rel_pos_bias.relative_position_bias_table"],
                              sd["rel_pos_bias.relative_position_index"])
    early = None
    for i in range(numbered(sd, "blocks")):
        x = unilm_block(x, sd, f"blocks.{i}", heads, bias)
        if i + 1 == early_layers:
            early = x[:, 1:]
    x_cls_pt = None
    if numbered(sd, "cls_pt_layers"):
        x_cls_pt = torch.cat([x[:, [0]], early], dim=1)  # the LAST block's cls, the early patch tokens
        for i in range(numbered(sd, "cls_pt_layers")):
            x_cls_pt = unilm_block(x_cls_pt, sd, f"cls_pt_layers.{i}", heads, bias)
    norm = lambda t: F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=EPS)  # noqa: E731
    head = lambda t: F.linear(t[:, 1:][bool_masked_pos], sd["lm_head.weight"], sd["lm_head.bias"])  # noqa: E731
    x = norm(x)
    outputs = [head(x)] if x_cls_pt is None else [head(x), head(norm(x_cls_pt))]
    return outputs, x


TOKENIZER = {"method": "vqkd", "model": {  # any tokenizer of the 4x4 grid and 12 codes: the tests give the codes
    "img_size": 8, "patch_size": 2, "in_chans": 3, "embed_dim": 16, "depth": 1, "num_heads": 2,
    "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "codebook_size": 12, "code_dim": 4}}


def mimkit_beitv2(depth=3, early_layers=2, head_layers=2, abs_pos=False, seed=9) -> BEiTv2:
    torch.manual_seed(seed)
    return BEiTv2(BEiTv2Config(
        tokenizer_config=TOKENIZER, img_size=8, patch_size=2, in_chans=3, embed_dim=16, depth=depth, num_heads=2,
        early_layers=early_layers, head_layers=head_layers, abs_pos_embed=abs_pos, layer_scale=0.1, drop_path=0.0,
        num_mask_patches=6, min_mask_patches=4, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD)).eval()


def mimkit_logits(model, images, mask):
    """mimkit's two heads at the hidden positions: [main (M, V)] + [aggregation (M, V)] when it has one."""
    last, early = model.forward_encoder(images, mask, keep_early=bool(model.cls_pt_layers))
    logits = [model.mim_logits(last, mask)]
    if model.cls_pt_layers:
        logits.append(model.mim_logits(model.forward_aggregation(last, early), mask))
    return logits


def batch(seed=3, n=3):
    """[0, 1] images, the official model's input (ImageNet-normalised, as its data pipeline gives it),
    a random boolean mask (a different count per image) and random codes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=g)
    normalised = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mask = torch.rand(n, 16, generator=g) < 0.45
    mask[:, 0] = True
    return images, normalised, mask, torch.randint(0, 12, (n, 4, 4), generator=g)


@pytest.mark.parametrize("variant", ["cls_pt", "cls_pt_abs_pos", "plain"])
def test_beitv2_mim_logits_equal_the_unilm_reference_forward(tmp_path, variant):
    head_layers, abs_pos = (0, False) if variant == "plain" else (2, variant == "cls_pt_abs_pos")
    sd = unilm_beitv2_state_dict(head_layers=head_layers, abs_pos=abs_pos)
    torch.save({"model": sd, "epoch": 299}, tmp_path / "checkpoint-299.pth")
    model = mimkit_beitv2(head_layers=head_layers, abs_pos=abs_pos)
    report = load_unilm_beitv2(model, tmp_path / "checkpoint-299.pth", strict=True)
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == len(sd)

    images, normalised, mask, codes = batch()
    with torch.no_grad():
        expected, _ = unilm_beitv2_forward(sd, normalised, mask, heads=2, early_layers=2)
        got = mimkit_logits(model, images, mask)
        assert len(got) == len(expected) == (1 if variant == "plain" else 2)
        for a, b in zip(got, expected):
            assert a.shape == (int(mask.sum()), 12)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # the training loss is engine_for_pretraining.py's: CE of each head on the masked codes, summed
        target = codes.flatten(1)[mask]
        out = model(images, tokens=codes, mask=mask)
        assert out.loss.item() == pytest.approx(sum(F.cross_entropy(e, target) for e in expected).item(), abs=1e-5)
        # downstream features: the unmasked forward_features' normed cls token
        _, plain_tokens = unilm_beitv2_forward(sd, normalised, torch.zeros_like(mask), heads=2, early_layers=2)
        torch.testing.assert_close(model.features(images, "cls"), plain_tokens[:, 0], atol=1e-5, rtol=1e-5)
    # the reference is sensitive to the mask token (a constant shift would not be: LayerNorm removes it)
    sd2 = dict(sd, mask_token=sd["cls_token"])
    assert not torch.allclose(unilm_beitv2_forward(sd2, normalised, mask, 2, 2)[0][0], expected[0], atol=1e-3)


def test_beitv2_export_has_the_unilm_key_set_and_gives_the_same_logits():
    model = mimkit_beitv2(abs_pos=True, seed=4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-trivial values everywhere (biases, layer scales and the table start constant)
        for name, p in model.named_parameters():
            if not name.startswith("tokenizer."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))
    exported = beitv2_to_unilm(model.state_dict())
    official = unilm_beitv2_state_dict(abs_pos=True)
    assert set(exported) == set(official)
    assert all(exported[k].shape == official[k].shape for k in official)
    assert torch.equal(exported["rel_pos_bias.relative_position_index"],
                       official["rel_pos_bias.relative_position_index"])  # mimkit's index = the official one
    images, normalised, mask, _ = batch(seed=7)
    with torch.no_grad():
        expected, _ = unilm_beitv2_forward(exported, normalised, mask, heads=2, early_layers=2)
        for a, b in zip(mimkit_logits(model, images, mask), expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_beitv2_loader_errors_and_partial_files():
    sd = unilm_beitv2_state_dict()
    model = mimkit_beitv2()
    with pytest.raises(CheckpointError, match="shape mismatch for 'lm_head.weight'"):
        load_unilm_beitv2(model, {"model": dict(sd, **{"lm_head.weight": torch.zeros(8, 16)})})
    other_grid = dict(sd, **{"rel_pos_bias.relative_position_index": sd["rel_pos_bias.relative_position_index"].t()})
    with pytest.raises(CheckpointError, match="indexes another patch grid"):
        load_unilm_beitv2(model, other_grid)
    before = model.mask_token.clone()
    report = load_unilm_beitv2(model, {k: v for k, v in sd.items() if k != "mask_token"} | {"extra.w": torch.ones(1)})
    assert report.missing == ["mask_token"] and report.unexpected == ["extra.w"]
    assert torch.equal(model.mask_token, before) and torch.equal(model.blocks[2].ls2.gamma, sd["blocks.2.gamma_2"])
    with pytest.raises(CheckpointError, match="mask_token"):
        load_unilm_beitv2(model, {k: v for k, v in sd.items() if k != "mask_token"}, strict=True)


# ------------------------------------------------------------------ VQ-KD tokenizer
def unilm_state_dict(dim=16, depth=2, dec_depth=1, grid=4, patch=2, chans=1, code_dim=4, codes=8, out_dim=12):
    """modeling_vqkd.VQKD's state dict (get_model_default_params: use_mean_pooling, so `fc_norm` and no
    `norm`; init_values 0, so no gamma; qkv_bias: q_bias / v_bias; num_classes 0: no head), the decoder a
    patch-1 ViT on code_dim channels, NormEMAVectorQuantizer's l2-normalised codebook and EMA statistics,
    and the other training-only tensors (teacher_model, scaling_layer). tests/test_convert_folders.py
    uses it through tests/test_vqkd.py."""
    g = torch.Generator().manual_seed(0)
    r = rand(g)
    sd = {}

    def vit(prefix, in_chans, p, n_blocks):
        sd[f"{prefix}.cls_token"], sd[f"{prefix}.pos_embed"] = r(1, 1, dim), r(1, grid * grid + 1, dim)
        sd[f"{prefix}.patch_embed.proj.weight"], sd[f"{prefix}.patch_embed.proj.bias"] = r(dim, in_chans, p, p), r(dim)
        for i in range(n_blocks):
            sd.update(block_tensors(r, f"{prefix}.blocks.{i}", dim, layer_scale=False))
        sd[f"{prefix}.fc_norm.weight"], sd[f"{prefix}.fc_norm.bias"] = 1 + r(dim), r(dim)

    vit("encoder", chans, patch, depth)
    vit("decoder", code_dim, 1, dec_depth)
    sd.update({"encode_task_layer.0.weight": r(dim, dim), "encode_task_layer.0.bias": r(dim),
               "encode_task_layer.2.weight": r(code_dim, dim), "encode_task_layer.2.bias": r(code_dim),
               "decode_task_layer.0.weight": r(dim, dim), "decode_task_layer.0.bias": r(dim),
               "decode_task_layer.2.weight": r(out_dim, dim), "decode_task_layer.2.bias": r(out_dim),
               "quantize.embedding.weight": F.normalize(r(codes, code_dim), dim=1),
               "quantize.embedding.cluster_size": r(codes), "quantize.embedding.embed_avg": r(codes, code_dim),
               "quantize.embedding.initted": torch.ones(1), "quantize.cluster_size": r(codes),
               "teacher_model.visual.proj": r(dim, out_dim), "scaling_layer.shift": r(1, 3, 1, 1)})
    return sd


def unilm_vit_patch_tokens(sd, prefix, x, heads):
    """modeling_finetune.VisionTransformer(x, return_patch_tokens=True) with use_mean_pooling:
    patch conv, cls, pos_embed, blocks, norm = Identity, fc_norm of the patch tokens."""
    weight = sd[f"{prefix}.patch_embed.proj.weight"]
    x = F.conv2d(x, weight, sd[f"{prefix}.patch_embed.proj.bias"], stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{prefix}.cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd[f"{prefix}.pos_embed"]
    for i in range(numbered(sd, f"{prefix}.blocks")):
        x = unilm_block(x, sd, f"{prefix}.blocks.{i}", heads)
    return F.layer_norm(x[:, 1:], (x.shape[-1],), sd[f"{prefix}.fc_norm.weight"], sd[f"{prefix}.fc_norm.bias"], eps=EPS)


def task_layer(sd, prefix, x):
    """nn.Sequential(Linear, Tanh, Linear)."""
    return F.linear(torch.tanh(F.linear(x, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"])),
                    sd[f"{prefix}.2.weight"], sd[f"{prefix}.2.bias"])


def unilm_vqkd_decode(sd, quantize, heads):
    """VQKD.decode: quantize (N, code_dim, h, w) -> decoder patch tokens -> decode_task_layer (N, L, D)."""
    return task_layer(sd, "decode_task_layer", unilm_vit_patch_tokens(sd, "decoder", quantize, heads))


def unilm_vqkd_forward(sd, images, target, heads, decoder_heads):
    """VQKD.forward in eval mode on [0, 1] images and given teacher features `target` (N, L, D):
    pre_process (x 255 / 127.5 - 1), encode (encoder patch tokens, encode_task_layer, the quantizer:
    l2norm, nearest code by Euclidean distance, z_q = weight[ind], loss = beta 1.0 * mse(z_q, z),
    straight-through z + (z_q - z)), decode, cosine rec loss; -> (codes (N, L), rec, loss)."""
    x = images * 255.0 / 127.5 - 1.0  # data.max() <= 1
    z = task_layer(sd, "encode_task_layer", unilm_vit_patch_tokens(sd, "encoder", x, heads))
    n, length, code_dim = z.shape
    side = int(length ** 0.5)
    z = F.normalize(z.transpose(1, 2).reshape(n, code_dim, side, side).permute(0, 2, 3, 1), p=2, dim=-1)  # b h w c
    flat, book = z.reshape(-1, code_dim), sd["quantize.embedding.weight"]
    d = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * torch.einsum("bd,nd->bn", flat, book)
    ind = d.argmin(1)
    z_q = F.embedding(ind, book).view(z.shape)
    emb_loss = 1.0 * F.mse_loss(z_q, z)
    z_q = (z + (z_q - z)).permute(0, 3, 1, 2)  # b c h w
    rec = unilm_vqkd_decode(sd, z_q, decoder_heads)
    t, p = target / target.norm(dim=-1, keepdim=True), rec / rec.norm(dim=-1, keepdim=True)
    rec_loss = (1 - (t * p).sum(-1)).mean()
    return ind.view(n, -1), rec, emb_loss + rec_loss


def test_vqkd_codes_decoded_features_and_loss_equal_the_unilm_reference_forward(tmp_path):
    sd = unilm_state_dict()
    torch.save({"model": sd}, tmp_path / "vqkd.pth")
    model, report = vqkd_from_unilm(tmp_path / "vqkd.pth", num_heads=2, decoder_num_heads=2)
    assert report.missing == [] and report.unexpected == [] and "6 unilm training-only" in report.summary()
    g = torch.Generator().manual_seed(1)
    images, target = torch.rand(5, 1, 8, 8, generator=g), torch.randn(5, 16, 12, generator=g)
    with torch.no_grad():
        codes, rec, loss = unilm_vqkd_forward(sd, images, target, heads=2, decoder_heads=2)
        assert len(codes.unique()) > 3  # the batch uses several codes
        assert torch.equal(model.encode(images).view(5, -1), codes)
        # the decoder alone: mimkit's features of the codes = VQKD.decode of the codebook vectors
        quantize = F.embedding(codes, sd["quantize.embedding.weight"]).transpose(1, 2).reshape(5, 4, 4, 4)
        expected = unilm_vqkd_decode(sd, quantize, heads=2)
        got = model.features_from_codes(codes.view(5, 4, 4))
        assert got.shape == (5, 16, 12)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rec, expected, atol=1e-5, rtol=1e-5)  # straight-through: same values
        # the training loss (eval mode: no EMA update) against the given teacher features
        model.attach_teacher(Teacher(lambda x: target[: len(x)], grid_size=(4, 4)))
        out = model(images)
        torch.testing.assert_close(out.pred, rec, atol=1e-5, rtol=1e-5)
        assert torch.equal(out.codes.view(5, -1), codes)
        assert out.loss.item() == pytest.approx(loss.item(), abs=1e-5)
        cosine = F.cosine_similarity(rec, target, dim=-1).mean()
        assert out.logs["cosine"].item() == pytest.approx(cosine.item(), abs=1e-5)
    # the reference decoder reads every block tensor: another decoder qkv changes its output
    sd2 = dict(sd, **{"decoder.blocks.0.attn.qkv.weight": sd["decoder.blocks.0.attn.qkv.weight"].flip(0)})
    assert not torch.allclose(unilm_vqkd_decode(sd2, quantize, heads=2), expected, atol=1e-3)


def test_vqkd_converter_fuses_the_bias_renames_fc_norm_and_refuses_unknown_keys():
    sd = unilm_state_dict()
    model, _ = vqkd_from_unilm(sd, num_heads=2, decoder_num_heads=2)
    c = model.config
    assert (c.img_size, c.patch_size, c.embed_dim, c.depth, c.decoder_depth, c.code_dim, c.codebook_size,
            c.teacher_dim, c.beta) == (8, 2, 16, 2, 1, 4, 8, 12, 1.0)
    qkv = model.state_dict()["encoder.blocks.1.attn.qkv.bias"]
    assert torch.equal(qkv[:16], sd["encoder.blocks.1.attn.q_bias"]) and torch.equal(qkv[16:32], torch.zeros(16))
    assert torch.equal(qkv[32:], sd["encoder.blocks.1.attn.v_bias"])
    assert torch.equal(model.state_dict()["decoder.norm.weight"], sd["decoder.fc_norm.weight"])
    assert bool(model.quantize.initialized)  # no k-means init on top of the pretrained codebook
    # an unknown tensor (layer scale, which VQ-KD does not use) is refused in strict mode
    with pytest.raises(CheckpointError, match="unexpected"):
        vqkd_from_unilm({**sd, "encoder.blocks.0.gamma_1": torch.ones(16)}, num_heads=2, decoder_num_heads=2)
    with pytest.raises(CheckpointError, match="not a unilm BEiT v2 VQ-KD"):
        vqkd_config_from_unilm({"blocks.0.norm1.weight": torch.ones(2)})
