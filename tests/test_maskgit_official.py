"""MaskGIT's released flax transformer in mimkit: a synthetic flax tree with the official key set and
shapes (small config), written as a flax msgpack file, converted, and compared with a reference
forward written here from google-research/maskgit's maskgit_transformer.py (numpy, float64, on the
flax tree itself: no mimkit module); the "bert" MaskGIT trains and samples; `mimkit convert` writes
a folder that loads to the same model."""
import msgpack
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mimkit.cli import main
from mimkit.errors import CheckpointError
from mimkit.generation.pipelines import generate
from mimkit.generation.sampler import MaskedTokenSampler
from mimkit.hub.converters import IncompleteModel, get_converter
from mimkit.hub.flax_msgpack import read_flax_checkpoint
from mimkit.hub.maskgit_flax import maskgit_from_flax
from mimkit.methods.maskgit import MaskGIT, MaskGITConfig
from mimkit.registry import from_pretrained
from mimkit.tokenizers.vqgan import VQGAN, VQGANConfig

# tiny VQGAN: 8 px -> 4x4 = 16 tokens from 16 codes
TOKENIZER = {"img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
             "disc_channels": 8, "disc_layers": 1}
V, C, L, D, H, MLP, DEPTH = 16, 3, 16, 16, 2, 32, 2
VOCAB = V + C + 1  # codes, classes, [MASK]


def tokenizer() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(**TOKENIZER)).eval()


def official_tree(seed: int = 0) -> dict:
    """The flax params tree of maskgit_transformer.Transformer (names and shapes as official) with
    seeded random values."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ln():
        return {"scale": 1 + w(D, scale=0.1), "bias": w(D, scale=0.1)}

    d = D // H
    params = {"Embed_0": {"word_embeddings": {"embedding": w(VOCAB, D, scale=1.0)},
                          "position_embeddings": {"embedding": w(L + 1, D, scale=1.0)}, "embeddings_ln": ln()}}
    for i in range(DEPTH):
        attn = {name: {"kernel": w(D, H, d), "bias": w(H, d, scale=0.1)} for name in ("query", "key", "value")}
        attn["out"] = {"kernel": w(H, d, D), "bias": w(D, scale=0.1)}
        params[f"TransformerLayer_{i}"] = {
            "Attention_0": {"self_attention": attn, "attention_output_ln": ln()},
            "Mlp_0": {"intermediate_output": {"kernel": w(D, MLP), "bias": w(MLP, scale=0.1)},
                      "layer_output": {"kernel": w(MLP, D), "bias": w(D, scale=0.1)}, "layer_output_ln": ln()}}
    params["MlmLayer_0"] = {"mlm_dense": {"kernel": w(D, D), "bias": w(D, scale=0.1)}, "mlm_ln": ln(),
                            "mlm_bias": {"bias": w(VOCAB, scale=0.5)}}
    return {"params": params}


def write_flax(tree: dict, path) -> None:
    """flax.serialization.to_bytes' format: arrays as msgpack ext 1 of (shape, dtype name, bytes)."""
    def default(x):
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True))
        return x
    path.write_bytes(msgpack.packb(tree, default=default, strict_types=True))


# ------------------------------------------------------------------ the official forward, by hand
def layer_norm(x, p, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x):  # jax.nn.gelu(approximate=True), its default
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def reference_logits(tree: dict, input_ids: np.ndarray) -> np.ndarray:
    """maskgit_transformer.Transformer.__call__ (deterministic) on input ids (N, 1 + L) with the
    class id label + V first and -1 at masked tokens, then inference.py's cut to the codebook:
    -> (N, 1 + L, V)."""
    p = _as64(tree["params"])
    emb = p["Embed_0"]
    table = emb["word_embeddings"]["embedding"]
    x = table[input_ids] + emb["position_embeddings"]["embedding"][: input_ids.shape[1]]  # -1 wraps: last row
    x = layer_norm(x, emb["embeddings_ln"])
    for i in range(DEPTH):
        a = p[f"TransformerLayer_{i}"]["Attention_0"]
        sa = a["self_attention"]
        q, k, v = (np.einsum("nld,dhk->nlhk", x, sa[n]["kernel"]) + sa[n]["bias"] for n in ("query", "key", "value"))
        q = q / np.sqrt(q.shape[-1])
        logits = np.einsum("nqhk,nthk->nhqt", q, k)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out = np.einsum("nhqt,nthk->nqhk", weights, v)
        out = np.einsum("nqhk,hkd->nqd", out, sa["out"]["kernel"]) + sa["out"]["bias"]
        x = layer_norm(out + x, a["attention_output_ln"])
        m = p[f"TransformerLayer_{i}"]["Mlp_0"]
        x = layer_norm(dense(gelu_tanh(dense(x, m["intermediate_output"])), m["layer_output"]) + x,
                       m["layer_output_ln"])
    mlm = p["MlmLayer_0"]
    h = layer_norm(gelu_tanh(dense(x, mlm["mlm_dense"])), mlm["mlm_ln"])
    return (h @ table.T + mlm["mlm_bias"]["bias"])[..., :V]


def _as64(tree):
    return {k: _as64(v) if isinstance(v, dict) else v.astype(np.float64) for k, v in tree.items()}


def converted_model(tmp_path, tree=None) -> MaskGIT:
    path = tmp_path / "maskgit_checkpoint"
    write_flax(tree or official_tree(), path)
    model, report = maskgit_from_flax(read_flax_checkpoint(path).state_dict, tokenizer())
    assert report.complete and len(report.loaded) == 4 + 12 * DEPTH + 5
    return model


def masked_batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, V, (3, L), generator=g)
    masked = torch.rand(3, L, generator=g) < 0.5
    masked[:, 0] = True
    return codes, masked


# ------------------------------------------------------------------ tests
def test_converted_transformer_gives_the_official_logits(tmp_path):
    model = converted_model(tmp_path)
    c = model.config
    assert (c.architecture, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.num_classes, c.norm_eps) == (
        "bert", D, DEPTH, H, MLP / D, C, 1e-12)
    assert model.mask_token_id == VOCAB - 1  # the official -1 wraps to the table's last row
    codes, masked = masked_batch()
    labels = torch.tensor([0, 2, 1])
    official_ids = np.concatenate([labels.numpy()[:, None] + V, np.where(masked, -1, codes.numpy())], 1)
    want = reference_logits(official_tree(), official_ids)[:, 1:]
    with torch.no_grad():
        got = model.token_logits(codes.masked_fill(masked, model.mask_token_id), labels)
    assert got.shape == (3, L, V)
    # float32 (logits up to ~10: measured 6e-6 off) and float64 (the mapping itself, no rounding)
    np.testing.assert_allclose(got.double().numpy(), want, atol=5e-5, rtol=0)
    with torch.no_grad():
        got64 = model.double().token_logits(codes.masked_fill(masked, model.mask_token_id), labels)
    np.testing.assert_allclose(got64.numpy(), want, atol=1e-9, rtol=0)
    model.float()
    # no label (unconditional rows, label dropout): [MASK] at the class position, here and in the reference
    want_none = reference_logits(official_tree(), np.concatenate([np.full((3, 1), -1), official_ids[:, 1:]], 1))
    with torch.no_grad():
        got_none = model.token_logits(codes.masked_fill(masked, model.mask_token_id), torch.tensor([-1, -1, -1]))
    np.testing.assert_allclose(got_none.double().numpy(), want_none[:, 1:], atol=1e-5, rtol=0)


def test_bert_maskgit_trains_and_samples_class_conditionally(tmp_path):
    model = converted_model(tmp_path)
    codes, _ = masked_batch()
    model.train()
    out = model(tokens=codes.view(3, 4, 4), labels=torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert model.head.bias.grad[V:].abs().sum() == 0  # classes and [MASK] are never predicted
    model.eval()
    images = generate(model, labels=[0, 2], generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_pre_ln_stays_the_default_and_a_wrong_architecture_is_refused():
    assert MaskGITConfig().architecture == "pre_ln"
    with pytest.raises(Exception, match="architecture must be one of pre_ln, bert"):
        MaskGITConfig(architecture="post_ln").validate()


def test_convert_command_writes_a_folder_that_loads_to_the_same_model(tmp_path):
    write_flax(official_tree(), tmp_path / "maskgit_checkpoint")
    tokenizer().save_pretrained(tmp_path / "tok")
    assert main(["convert", "maskgit-flax-transformer", str(tmp_path / "maskgit_checkpoint"), str(tmp_path / "out"),
                 "--set", f"tokenizer={tmp_path / 'tok'}"]) in (0, None)
    loaded = from_pretrained(tmp_path / "out").eval()
    expected = converted_model(tmp_path)
    codes, masked = masked_batch(3)
    with torch.no_grad():
        a = loaded.token_logits(codes.masked_fill(masked, loaded.mask_token_id), torch.tensor([1, 1, 0]))
        b = expected.token_logits(codes.masked_fill(masked, expected.mask_token_id), torch.tensor([1, 1, 0]))
    assert torch.equal(a, b)
    with pytest.raises(IncompleteModel, match="--set tokenizer=PATH"):
        get_converter("maskgit-flax-transformer").build(read_flax_checkpoint(tmp_path / "maskgit_checkpoint"), {})


def test_a_tokenizer_of_another_grid_or_a_damaged_tree_is_refused(tmp_path):
    tree = official_tree()
    tree["params"]["Embed_0"]["position_embeddings"]["embedding"] = np.zeros((10, D), np.float32)
    write_flax(tree, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="10 positions but the tokenizer makes 4x4"):
        maskgit_from_flax(read_flax_checkpoint(tmp_path / "ckpt").state_dict, tokenizer())
    tree = official_tree()
    del tree["params"]["TransformerLayer_1"]["Mlp_0"]["layer_output_ln"]
    write_flax(tree, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="blocks.1.norm2.weight, blocks.1.norm2.bias"):
        maskgit_from_flax(read_flax_checkpoint(tmp_path / "ckpt").state_dict, tokenizer())


# ------------------------------------------------------------------ the tokenizer (vqgan_tokenizer.py VQVAE)
FILTERS, MULT, BLOCKS, ZDIM = 32, (1, 1, 2), 2, 4  # GroupNorm's 32 groups: widths are multiples of 32
TOKENIZER_CODES, TOKENIZER_IMG = V, 16  # 16 px, f = 4 -> 4x4 = L tokens


def official_tokenizer_tree(seed: int = 0) -> dict:
    """The flax params tree of vqgan_tokenizer.VQVAE (compact naming: Conv_k / ResBlock_k /
    GroupNorm_k counted per module in call order), seeded random values."""
    rng = np.random.default_rng(seed)

    def conv(cin, cout, k=3, bias=True):
        p = {"kernel": (rng.standard_normal((k, k, cin, cout)) / np.sqrt(cin * k * k)).astype(np.float32)}
        if bias:
            p["bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        return p

    def gn(c):
        return {"scale": (1 + rng.standard_normal(c) * 0.1).astype(np.float32),
                "bias": (rng.standard_normal(c) * 0.1).astype(np.float32)}

    def resblock(cin, cout):
        p = {"GroupNorm_0": gn(cin), "Conv_0": conv(cin, cout, bias=False), "GroupNorm_1": gn(cout),
             "Conv_1": conv(cout, cout, bias=False)}
        if cin != cout:
            p["Conv_2"] = conv(cout, cout, 1, bias=False)  # the shortcut sees the branch's output
        return p

    enc, c, r = {"Conv_0": conv(3, FILTERS, bias=False)}, FILTERS, 0
    for mult in MULT:
        for _ in range(BLOCKS):
            enc[f"ResBlock_{r}"], c, r = resblock(c, FILTERS * mult), FILTERS * mult, r + 1
    for _ in range(BLOCKS):
        enc[f"ResBlock_{r}"], r = resblock(c, c), r + 1
    enc["GroupNorm_0"], enc["Conv_1"] = gn(c), conv(c, ZDIM, 1)
    dec, r, k = {"Conv_0": conv(ZDIM, c)}, 0, 1
    for _ in range(BLOCKS):
        dec[f"ResBlock_{r}"], r = resblock(c, c), r + 1
    for i in reversed(range(len(MULT))):
        for _ in range(BLOCKS):
            dec[f"ResBlock_{r}"], c, r = resblock(c, FILTERS * MULT[i]), FILTERS * MULT[i], r + 1
        if i > 0:
            dec[f"Conv_{k}"], k = conv(c, c), k + 1
    dec["GroupNorm_0"], dec[f"Conv_{k}"] = gn(c), conv(c, 3)
    codebook = rng.standard_normal((TOKENIZER_CODES, ZDIM)).astype(np.float32)
    return {"params": {"encoder": enc, "decoder": dec, "quantizer": {"codebook": codebook}}}


def t64(a):
    return torch.from_numpy(np.asarray(a, np.float64))


def ref_conv(x, p):  # flax Conv, padding SAME, stride 1; kernel (kh, kw, in, out)
    k = p["kernel"].shape[0]
    return F.conv2d(x, t64(p["kernel"]).permute(3, 2, 0, 1), t64(p["bias"]) if "bias" in p else None, padding=k // 2)


def ref_gn(x, p):  # flax GroupNorm: 32 groups, eps 1e-6
    return F.group_norm(x, 32, t64(p["scale"]), t64(p["bias"]), eps=1e-6)


def ref_resblock(x, p):
    h = ref_conv(F.silu(ref_gn(x, p["GroupNorm_0"])), p["Conv_0"])
    h = ref_conv(F.silu(ref_gn(h, p["GroupNorm_1"])), p["Conv_1"])
    return h + (ref_conv(h, p["Conv_2"]) if "Conv_2" in p else x)


def reference_encode(tree, images):
    """VQVAE.encode_to_indices: images (N, 3, H, W) in [0, 1] -> codes (N, h, w)."""
    p = tree["params"]["encoder"]
    x, r = ref_conv(images.double(), p["Conv_0"]), 0
    for i in range(len(MULT)):
        for _ in range(BLOCKS):
            x, r = ref_resblock(x, p[f"ResBlock_{r}"]), r + 1
        if i < len(MULT) - 1:
            x = F.avg_pool2d(x, 2)
    for _ in range(BLOCKS):
        x, r = ref_resblock(x, p[f"ResBlock_{r}"]), r + 1
    z = ref_conv(F.silu(ref_gn(x, p["GroupNorm_0"])), p["Conv_1"]).permute(0, 2, 3, 1)
    codebook = t64(tree["params"]["quantizer"]["codebook"])
    return ((z[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)


def reference_decode(tree, codes):
    """VQVAE.decode_from_indices: codes (N, h, w) -> images (N, 3, H, W), not clamped."""
    p = tree["params"]["decoder"]
    x = ref_conv(t64(tree["params"]["quantizer"]["codebook"])[codes].permute(0, 3, 1, 2), p["Conv_0"])
    r, k = 0, 1
    for _ in range(BLOCKS):
        x, r = ref_resblock(x, p[f"ResBlock_{r}"]), r + 1
    for i in reversed(range(len(MULT))):
        for _ in range(BLOCKS):
            x, r = ref_resblock(x, p[f"ResBlock_{r}"]), r + 1
        if i > 0:
            x, k = ref_conv(F.interpolate(x, scale_factor=2, mode="nearest"), p[f"Conv_{k}"]), k + 1
    return ref_conv(F.silu(ref_gn(x, p["GroupNorm_0"])), p[f"Conv_{k}"])


def test_converted_tokenizer_gives_the_official_codes_and_images(tmp_path):
    from mimkit.hub.maskgit_vqgan_flax import maskgit_vqgan_from_flax

    tree = official_tokenizer_tree()
    write_flax(tree, tmp_path / "tokenizer_checkpoint")
    model, report = maskgit_vqgan_from_flax(read_flax_checkpoint(tmp_path / "tokenizer_checkpoint").state_dict,
                                            img_size=TOKENIZER_IMG)
    assert not report.missing and not report.unexpected
    c = model.config
    assert (c.base_channels, tuple(c.channel_mult), c.num_res_blocks, c.codebook_size, c.code_dim) == (
        FILTERS, MULT, BLOCKS, TOKENIZER_CODES, ZDIM)
    images = torch.rand(2, 3, TOKENIZER_IMG, TOKENIZER_IMG, generator=torch.Generator().manual_seed(0))
    want_codes = reference_encode(tree, images)
    codes = model.encode(images)
    assert codes.shape == (2, 4, 4) and torch.equal(codes, want_codes)
    assert len(codes.unique()) > 3  # the comparison is not between constant maps
    want = reference_decode(tree, want_codes)
    with torch.no_grad():
        got = model.decode_codes(want_codes)
        assert (got.double() - want).abs().max() < 1e-4
        assert torch.allclose(model.decode(want_codes).double(), want.clamp(0, 1), atol=1e-4)
        got64 = model.double().decode_codes(want_codes)
    assert (got64 - want).abs().max() < 1e-9


def test_transformer_converter_takes_the_flax_tokenizer_and_generate_samples(tmp_path):
    write_flax(official_tree(), tmp_path / "maskgit_checkpoint")
    write_flax(official_tokenizer_tree(), tmp_path / "tokenizer_checkpoint")
    out = tmp_path / "maskgit"
    main(["convert", "maskgit-flax-transformer", str(tmp_path / "maskgit_checkpoint"), str(out),
          "--set", f"tokenizer={tmp_path / 'tokenizer_checkpoint'}"])
    model = from_pretrained(out).eval()
    assert model.tokenizer.method_name == "maskgit_vqgan"
    assert model.tokenizer.config.img_size == TOKENIZER_IMG  # from the transformer's 16 + 1 positions
    images = generate(model, labels=[1, 2], sampler=MaskedTokenSampler(steps=4),
                      generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, TOKENIZER_IMG, TOKENIZER_IMG)
    main(["convert", "maskgit-flax-tokenizer", str(tmp_path / "tokenizer_checkpoint"), str(tmp_path / "tok"),
          "--set", f"img_size={TOKENIZER_IMG}"])
    tok = from_pretrained(tmp_path / "tok")
    assert torch.equal(tok.quantize.embedding.weight, model.tokenizer.quantize.embedding.weight)
