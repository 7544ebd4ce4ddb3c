"""MaskGIT and MAGE: masking counts, loss on masked tokens only, conditioning, MAGE's padding and
token dropping, MAGE-C's InfoNCE, and training end to end from a token cache."""
import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from mimkit.methods.mage import MAGE, MAGEConfig, info_nce
from mimkit.methods.maskgit import MaskGIT, MaskGITConfig
from mimkit.nn import mask_fraction, num_masked_for_training, truncated_normal_ratio

TOKENIZER = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}  # 8 px -> 4x4 = 16 tokens from 16 codes


def tiny_maskgit(**kw) -> MaskGIT:
    torch.manual_seed(0)
    kw = {"tokenizer_config": TOKENIZER, "embed_dim": 16, "depth": 1, "num_heads": 2, "dropout": 0.0} | kw
    return MaskGIT(MaskGITConfig(**kw))


def tiny_mage(**kw) -> MAGE:
    torch.manual_seed(0)
    kw = {"tokenizer_config": TOKENIZER, "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_embed_dim": 8,
          "decoder_depth": 1, "decoder_num_heads": 2, "dropout": 0.0, "projection_hidden_dim": 16,
          "projection_dim": 8} | kw
    return MAGE(MAGEConfig(**kw))


# ------------------------------------------------------------------ schedules and ratios
def test_schedule_values_by_hand():
    r = torch.tensor([0.0, 1 / 3, 0.5, 1.0])
    assert torch.allclose(mask_fraction("cosine", r, 16), torch.tensor([1.0, math.sqrt(3) / 2, math.sqrt(0.5), 0.0],
                                                                      dtype=torch.float64), atol=1e-12)
    assert torch.allclose(mask_fraction("cubic", r, 16), 1 - r.double() ** 3)
    # log: -log2(r) / log2(L); exp: 1 - 2^(-log2(L) (1 - r)) with L = 16 -> log2 L = 4
    assert mask_fraction("log", 0.5, 16).item() == pytest.approx(0.25)
    assert mask_fraction("exp", 0.5, 16).item() == pytest.approx(1 - 2 ** -2)
    # ceil(gamma(r) L), at least one token: cosine(0.5) * 16 = 11.31 -> 12; r = 1 -> 0 -> 1
    assert num_masked_for_training("cosine", torch.tensor([0.5, 1.0, 0.0]), 16).tolist() == [12, 1, 16]
    with pytest.raises(ValueError, match="unknown mask schedule 'cosinus'"):
        mask_fraction("cosinus", 0.5, 16)


def test_truncated_normal_ratio_matches_scipy():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([truncated_normal_ratio(generator=g) for _ in range(20000)])
    ref = scipy.stats.truncnorm((0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25, loc=0.55, scale=0.25)
    assert draws.min() >= 0.5 and draws.max() <= 1.0
    assert draws.mean().item() == pytest.approx(ref.mean(), abs=0.005)
    assert draws.std().item() == pytest.approx(ref.std(), abs=0.005)
    assert truncated_normal_ratio(0.55, 0.0, 0.5, 1.0) == 0.55  # std 0: MAGE's fixed-ratio ablation


# ------------------------------------------------------------------ MaskGIT
def test_maskgit_masks_ceil_gamma_r_tokens_per_image():
    model = tiny_maskgit(schedule="linear")
    torch.manual_seed(3)
    r = torch.rand(64)
    torch.manual_seed(3)
    mask = model.draw_mask(64, "cpu")
    assert mask.sum(1).tolist() == torch.ceil((1 - r) * 16).clamp(1, 16).long().tolist()


def test_maskgit_loss_is_smoothed_cross_entropy_on_masked_tokens_only():
    model = tiny_maskgit(num_classes=3, label_dropout=0.0, label_smoothing=0.1).eval()
    tokens = torch.randint(16, (5, 4, 4))
    labels = torch.tensor([0, 1, 2, -1, 1])
    torch.manual_seed(7)
    out = model(tokens=tokens, labels=labels)
    torch.manual_seed(7)
    mask = model.draw_mask(5, "cpu")
    flat = tokens.flatten(1)
    logits = model.token_logits(flat.masked_fill(mask, model.mask_token_id), labels)
    ref = F.cross_entropy(logits[mask], flat[mask], label_smoothing=0.1)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.logs["mask_fraction"].item() == pytest.approx(mask.float().mean().item())


def test_class_conditioning_label_dropout_and_null_class():
    model = tiny_maskgit(num_classes=3, label_dropout=0.0).eval()
    tokens = torch.full((2, 16), model.mask_token_id)
    cond = model.token_logits(tokens, torch.tensor([0, 2]))
    null = model.token_logits(tokens, torch.tensor([-1, -1]))
    assert not torch.allclose(cond[0], cond[1]) and torch.allclose(null, model.token_logits(tokens, None))
    with pytest.raises(ValueError, match="label 3 is outside 0..2"):
        model.token_logits(tokens, torch.tensor([3, 0]))
    model.config.label_dropout = 0.999999
    model.train()  # in training every label drops to the null row
    assert torch.equal(model.class_rows(torch.tensor([0, 1, 2]), 3, "cpu"), torch.tensor([3, 3, 3]))
    model.eval()
    assert torch.equal(model.class_rows(torch.tensor([0, 1, 2]), 3, "cpu"), torch.tensor([0, 1, 2]))


def test_output_layer_is_tied_to_the_token_embedding():
    model = tiny_maskgit()
    tokens = torch.randint(16, (2, 16))
    h = model.hidden_states(tokens, None)[:, 1:]
    head = model.head
    expected = F.layer_norm(F.gelu(head.dense(h)), (16,), head.norm.weight, head.norm.bias, 1e-6) \
        @ model.embed.tokens.weight[:16].t() + head.bias
    assert torch.allclose(model.token_logits(tokens, None), expected, atol=1e-5)


def test_tokenizer_stays_frozen_and_in_eval_mode():
    model = tiny_maskgit().train()
    assert not model.tokenizer.training
    model(images=torch.rand(3, 1, 8, 8)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.tokenizer.parameters())
    assert model.embed.tokens.weight.grad is not None


# ------------------------------------------------------------------ MAGE
def test_mage_masks_drops_and_keeps_the_right_tokens():
    model = tiny_mage()
    torch.manual_seed(1)
    mask, ids_keep, ratio = model.draw_masks(6, "cpu")
    assert 0.5 <= ratio <= 1.0
    assert mask.sum(1).tolist() == [math.ceil(ratio * 16)] * 6
    assert ids_keep.shape == (6, 8)  # drop_ratio 0.5 of 16
    dropped = torch.ones(6, 16, dtype=torch.bool).scatter(1, ids_keep, False)
    assert (dropped & ~mask).sum() == 0  # only masked tokens are dropped
    assert torch.equal(ids_keep, ids_keep.sort(1).values)


def test_mage_pads_masked_and_dropped_slots_with_the_class_output():
    model = tiny_mage().eval()
    latent = torch.randn(2, 1 + 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    everything = torch.arange(16).expand(2, -1)
    # ids_keep = every position: the same as no dropping
    assert torch.allclose(model.decode(latent, mask, everything), model.decode(latent, mask, None), atol=1e-6)
    # with dropping: the decoder sees cls at masked slots and each kept token at its own position
    captured = {}
    hook = model.decoder_blocks[0].register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    ids_keep = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [3, 6, 7, 8, 9, 10, 13, 15]])
    keep_latent = torch.cat([latent[:, :1], torch.stack([latent[i, 1:][ids_keep[i]] for i in range(2)])], 1)
    mask2 = torch.ones(2, 16, dtype=torch.bool).scatter(1, ids_keep, False)
    mask2[1, 3] = True  # a kept position that entered as [MASK] is also padded with cls
    model.decode(keep_latent, mask2, ids_keep)
    hook.remove()
    x = captured["x"] - model.decoder_pos_embed
    embedded = model.decoder_embed(keep_latent)
    for i in range(2):
        for slot in range(16):
            expected = embedded[i, 0] if mask2[i, slot] else embedded[i, 1 + ids_keep[i].tolist().index(slot)]
            assert torch.allclose(x[i, 1 + slot], expected, atol=1e-6)


def test_info_nce_against_a_loop():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 4), dim=-1)
    loss, _ = info_nce(z, 0.5)
    total = 0.0
    for i in range(6):
        positive = (i + 3) % 6
        logits = torch.tensor([z[i] @ z[j] / 0.5 for j in range(6) if j != i])
        others = [j for j in range(6) if j != i]
        total += -torch.log_softmax(logits, 0)[others.index(positive)]
    assert loss.item() == pytest.approx(total.item() / 6, rel=1e-5)


def test_mage_c_needs_two_views_and_adds_the_contrastive_term():
    model = tiny_mage(contrastive_weight=0.5)
    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="data.views=2"):
        model(images=images)
    out = model(images=images, images_2=images.flip(-1))
    logs = out.logs
    assert out.loss.item() == pytest.approx(logs["reconstruction_loss"].item() + 0.5 * logs["contrastive_loss"].item(),
                                            rel=1e-5)
    out.loss.backward()
    assert model.projector[0].weight.grad is not None


def test_class_conditional_mage_uses_the_class_row():
    model = tiny_mage(num_classes=2, label_dropout=0.0).eval()
    tokens = torch.full((2, 16), model.mask_token_id)
    a = model.token_logits(tokens, torch.tensor([0, 0]))
    b = model.token_logits(tokens, torch.tensor([1, 1]))
    assert not torch.allclose(a, b) and torch.allclose(a[0], a[1], atol=1e-6)


# ------------------------------------------------------------------ generators and configs
def labelled_batch():
    torch.manual_seed(11)
    return torch.randint(16, (8, 4, 4)), torch.tensor([0, 1, 2, -1, 1, 0, 2, 1])


@pytest.mark.parametrize("make", [tiny_maskgit, tiny_mage, lambda **kw: tiny_mage(contrastive_weight=0.5, **kw)],
                         ids=["maskgit", "mage", "mage_c"])
def test_a_generator_fixes_masks_ratio_label_dropout_and_loss_without_touching_the_global_rng(make):
    model = make(num_classes=3, label_dropout=0.5).train()  # dropout 0: the generator's draws are all there are
    tokens, labels = labelled_batch()
    views = {"tokens_2": tokens.flip(-1)} if getattr(model.config, "contrastive_weight", 0) > 0 else {}
    state = torch.get_rng_state()
    runs = [model(tokens=tokens, labels=labels, generator=torch.Generator().manual_seed(seed), **views)
            for seed in (0, 0, 1)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0].loss, runs[1].loss) and not torch.equal(runs[0].loss, runs[2].loss)
    assert all(torch.equal(runs[0].logs[k], runs[1].logs[k]) for k in runs[0].logs)
    if isinstance(model, MAGE):
        masks = [model.draw_masks(8, "cpu", torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
        assert torch.equal(masks[0][0], masks[1][0]) and torch.equal(masks[0][1], masks[1][1])
        assert masks[0][2] == masks[1][2] != masks[2][2]
        assert runs[0].logs["mask_ratio"].item() == torch.tensor(masks[0][2]).item()  # logged as float32
        assert not torch.equal(masks[0][1], masks[2][1])
    else:
        masks = [model.draw_mask(8, "cpu", torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
        assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
        assert runs[0].logs["mask_fraction"].item() == masks[0].float().mean().item()
    rows = [model.class_rows(labels, 8, "cpu", torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])
    assert torch.equal(torch.get_rng_state(), state)


def test_maskgit_draws_from_the_generator_as_from_the_global_rng():
    """The same calls in the same order: first r (N,), then the order (N, L), then label dropout."""
    model = tiny_maskgit(num_classes=3, label_dropout=0.5, schedule="linear").train()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    r, order = torch.rand(6, generator=ref), torch.rand(6, 16, generator=ref)
    mask = model.draw_mask(6, "cpu", g)
    assert torch.equal(mask, order.argsort(1).argsort(1) < torch.ceil((1 - r) * 16).clamp(1, 16).long()[:, None])
    dropped = torch.rand(6, generator=ref) < 0.5
    assert torch.equal(model.class_rows(labels, 6, "cpu", g), torch.where(dropped, 3, labels))
    # without a generator: the global RNG, exactly as before generators were added
    torch.manual_seed(5)
    r, order, dropped = torch.rand(6), torch.rand(6, 16), torch.rand(6) < 0.5
    torch.manual_seed(5)
    counts = torch.ceil((1 - r) * 16).long()
    assert torch.equal(model.draw_mask(6, "cpu"), order.argsort(1).argsort(1) < counts[:, None])
    assert torch.equal(model.class_rows(labels, 6, "cpu"), torch.where(dropped, 3, labels))


def test_mage_draws_the_ratio_then_the_order_from_the_generator():
    model = tiny_mage()
    g, ref = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    mask, ids_keep, ratio = model.draw_masks(4, "cpu", g)
    assert ratio == truncated_normal_ratio(generator=ref)
    order = torch.rand(4, 16, generator=ref).argsort(1)
    assert torch.equal(ids_keep, order[:, 8:].sort(1).values)
    assert torch.equal(mask, order.argsort(1) < math.ceil(ratio * 16))


def test_token_model_configs_keep_their_field_names_and_defaults():
    """The shared bases (TransformerConfig, TokenModelConfig) changed where the fields are declared,
    not their names or defaults (config.json of older checkpoints still loads)."""
    from mimkit.config_schema import from_dict, to_dict
    shared = {"tokenizer": "", "tokenizer_config": {}, "num_classes": 0, "label_dropout": 0.1, "label_smoothing": 0.1,
              "embed_dim": 768, "mlp_ratio": 4.0, "dropout": 0.1, "norm_eps": 1e-6, "attn_impl": "auto"}
    assert to_dict(MaskGITConfig()) == shared | {"depth": 24, "num_heads": 16, "schedule": "cosine",
                                                  "architecture": "pre_ln"}
    assert to_dict(MAGEConfig()) == shared | {
        "depth": 12, "num_heads": 12, "decoder_embed_dim": 768, "decoder_depth": 8, "decoder_num_heads": 16,
        "mask_ratio_mean": 0.55, "mask_ratio_std": 0.25, "mask_ratio_min": 0.5, "mask_ratio_max": 1.0,
        "drop_ratio": 0.5, "contrastive_weight": 0.0, "contrastive_temperature": 0.2, "projection_hidden_dim": 2048,
        "projection_dim": 256}
    for cls in (MaskGITConfig, MAGEConfig):
        assert from_dict(cls, to_dict(cls())) == cls()
