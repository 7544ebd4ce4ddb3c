"""Masked-token decoding and the generation pipelines, on a small fake masked token model whose
logits and tokenizer are known exactly."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mimkit.errors import ConfigError
from mimkit.generation import (MaskedImagePipeline, MaskedTokenSampler, edit, gaussian_blur, gaussian_kernel1d,
                               generate, inpaint, outpaint, to_pil, tokens_of_pixels)

V, MASK = 8, 8  # codebook size, mask token id


class FakeTokenizer:
    """16x16 grey images <-> 4x4 codes: a code is the mean of its 4x4 block quantised to V levels."""

    def encode(self, images):
        return torch.round(F.avg_pool2d(images, 4)[:, 0] * (V - 1)).long()

    def decode(self, codes):
        self.last = (codes.float() / (V - 1)).repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]
        return self.last


class FakeModel:
    """A masked token model with 3 classes over a 4x4 grid; token_logits records its inputs."""

    codebook_size, mask_token_id, grid_size = V, MASK, (4, 4)

    def __init__(self, num_classes=3):
        g = torch.Generator().manual_seed(0)
        self.num_classes = num_classes
        self.table = torch.randn(num_classes + 1, 16, V, generator=g) * 2  # row 0: label -1 / None
        self.embed = torch.randn(V + 1, V, generator=g)
        self.tokenizer = FakeTokenizer()
        self.calls = []

    def token_logits(self, tokens, labels):
        self.calls.append((tokens.clone(), None if labels is None else labels.clone()))
        rows = torch.zeros(len(tokens), dtype=torch.long) if labels is None else labels + 1
        return self.table[rows] + self.embed[tokens].mean(dim=1, keepdim=True)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the count schedule

@pytest.mark.parametrize("schedule, counts", [
    ("cosine", [14, 11, 6, 0]),   # floor(16 cos(pi r / 2)) at r = 1/4, 1/2, 3/4: 14.78, 11.31, 6.12
    ("linear", [12, 8, 4, 0]),
    ("square", [15, 12, 7, 0]),   # 16 (1 - r^2) = 15, 12, 7
    ("cubic", [15, 14, 9, 0]),    # 15.75, 14, 9.25
    ("sqrt", [8, 4, 2, 0]),       # 8, 4.69, 2.14
    ("log", [8, 4, 1, 0]),        # -log2(r) / log2(16) * 16 = 8, 4, 1.66
    ("exp", [14, 12, 8, 0]),      # 16 (1 - 2^(-4 (1 - r))) = 14, 12, 8
])
def test_mask_counts_of_each_schedule(schedule, counts):
    assert MaskedTokenSampler(steps=4, schedule=schedule).mask_counts(16).tolist() == counts


def test_mask_counts_clamps_to_one_below_the_unknown_and_handles_tiny_canvases():
    s = MaskedTokenSampler(steps=8, schedule="linear")
    # L0 = 3: targets floor(3 (1 - t/8)) = 2, 2, 1, 1, 1, 0, 0: at most #unknown - 1, at least 1
    assert s.mask_counts(3).tolist() == [2, 1, 1, 1, 1, 1, 1, 0]
    assert s.mask_counts(1).tolist() == [1] * 7 + [0]
    assert s.mask_counts(0).tolist() == [0] * 8
    per_sample = s.mask_counts(torch.tensor([3, 0, 1]))
    assert per_sample.shape == (8, 3) and per_sample[:, 0].tolist() == s.mask_counts(3).tolist()


# ---------------------------------------------------------------- the decoding loop

def recording_logits(logits: torch.Tensor):
    """(a logits callback giving `logits` (L, V) to every row, the list of token grids it was called with)."""
    seen = []

    def logits_fn(tokens, labels):
        seen.append(tokens.clone())
        return logits.expand(len(tokens), -1, -1)

    return logits_fn, seen


def test_positions_are_fixed_in_order_of_confidence_without_choice_noise():
    # position i is uniform over its first k_i ids: every sampled token has confidence -log k_i
    k = torch.tensor([5, 1, 8, 2, 16, 3, 6, 4])
    logits = torch.where(torch.arange(16) < k[:, None], 0.0, -math.inf)  # (8, 16)
    logits_fn, seen = recording_logits(logits)

    s = MaskedTokenSampler(steps=4, schedule="linear", choice_temperature=0.0)
    out = s.sample(logits_fn, torch.full((2, 8), 99), generator=gen(), mask_token_id=99)
    # linear, L0 = 8: 6, 4, 2, 0 masked after the steps; most confident (smallest k) first
    fixed = [set(), {1, 3}, {1, 3, 5, 7}, {1, 3, 5, 7, 0, 6}]
    for t, tokens in enumerate(seen):
        for row in tokens:
            assert set(torch.nonzero(row != 99).flatten().tolist()) == fixed[t]
    for a, b in zip(seen[1:], seen[2:] + [out], strict=True):  # a fixed token is never resampled
        assert torch.equal(b[a != 99], a[a != 99])
    assert (out < k).all()


def maskgit_choice(k: torch.Tensor, rows: int, counts: list[int], temperature: float, generator: torch.Generator,
                   anneal: bool = True) -> list[set]:
    """The positions fixed before each step, per MaskGIT's rule (google-research/maskgit,
    libml/parallel_decode.py: decode() and mask_by_random_topk()): at step t, ratio = (t + 1) / T,
        confidence = log p(sampled id) + temperature * (1 - ratio) * Gumbel   (+inf where already known)
        cut_off = sort(confidence)[mask_len];  masked again = confidence < cut_off
    i.e. the mask_len least confident are masked again and the rest are kept, the most confident.
    Position i is uniform over its first k_i ids, so log p = -log k_i whatever id is drawn. The
    generator is read as MaskedTokenSampler.sample reads it: at each step one uniform per unknown position
    for its id (row-major), then one per unknown position for its Gumbel noise, -log(-log u)."""
    steps = len(counts) + 1
    unknown = torch.ones(rows, len(k), dtype=torch.bool)
    fixed = [[set() for _ in range(rows)]]
    for t, mask_len in enumerate(counts):
        n = int(unknown.sum())
        torch.rand((n, 1), generator=generator)  # the ids drawn (irrelevant to the confidences here)
        u = torch.rand(n, generator=generator).clamp(1e-20, 1 - 1e-7)
        scale = temperature * (1 - (t + 1) / steps) if anneal else temperature
        confidence = torch.full((rows, len(k)), math.inf)
        confidence[unknown] = -torch.log(k.float()).expand(rows, -1)[unknown] + scale * -torch.log(-torch.log(u))
        cut_off = confidence.sort(dim=1).values[:, mask_len:mask_len + 1]
        unknown = confidence < cut_off
        fixed.append([set(torch.nonzero(~row).flatten().tolist()) for row in unknown])
    return fixed


def test_choice_noise_at_a_positive_temperature_follows_maskgit():
    k = torch.tensor([5, 1, 8, 2, 16, 3, 6, 4])
    logits = torch.where(torch.arange(16) < k[:, None], 0.0, -math.inf)  # (8, 16)
    logits_fn, seen = recording_logits(logits)

    counts, rows = [6, 4, 2], 5  # linear, L0 = 8, 4 steps
    s = MaskedTokenSampler(steps=4, schedule="linear", choice_temperature=4.5)
    s.sample(logits_fn, torch.full((rows, 8), 99), generator=gen(7), mask_token_id=99)
    got = [[set(torch.nonzero(row != 99).flatten().tolist()) for row in tokens] for tokens in seen]
    expected = maskgit_choice(k, rows, counts, 4.5, gen(7))
    assert got == expected
    # the reference tells the rule apart from its near misses on this draw: no noise (temperature 0),
    # noise not annealed with (1 - ratio), and the least confident kept instead of the most
    assert expected != maskgit_choice(k, rows, counts, 0.0, gen(7))
    assert expected != maskgit_choice(k, rows, counts, 4.5, gen(7), anneal=False)
    assert expected != maskgit_choice(k, rows, counts, -4.5, gen(7))


def test_choice_noise_keeps_the_more_confident_token_with_the_gumbel_max_probability():
    """Two unknown positions, log p 0 and -log 4; one is kept after step 1 of 2, the one whose confidence
    + s * Gumbel is larger, s = temperature * (1 - 1/2). The difference of two Gumbels is logistic:
    P(the confident one is kept) = sigmoid(log 4 / s), 0.8 at temperature 2 (1.0 at 0; 2/3 without the
    annealing, 0.2 keeping the least confident). Independent of how the generator is read."""
    logits = torch.tensor([[0.0, -math.inf, -math.inf, -math.inf], [0.0, 0.0, 0.0, 0.0]])  # k = 1 and 4
    logits_fn, seen = recording_logits(logits)

    n = 4000
    MaskedTokenSampler(steps=2, choice_temperature=2.0).sample(logits_fn, torch.full((n, 2), 9), generator=gen(3),
                                                               mask_token_id=9)
    kept = seen[1] != 9
    assert torch.equal(kept.sum(1), torch.ones(n, dtype=torch.long))
    share = kept[:, 0].float().mean().item()
    assert abs(share - torch.sigmoid(torch.tensor(math.log(4) / 1.0)).item()) < 0.035  # 5.5 sd of 0.0063


def test_known_tokens_never_change_and_nothing_stays_masked():
    model = FakeModel()
    canvas = torch.randint(0, V, (6, 16), generator=gen(1))
    canvas[torch.rand(6, 16, generator=gen(2)) < 0.6] = MASK
    known = canvas != MASK
    out = MaskedTokenSampler(steps=6).sample(model.token_logits, canvas, generator=gen(), mask_token_id=MASK)
    assert torch.equal(out[known], canvas[known])
    assert ((out >= 0) & (out < V)).all()
    for tokens, _ in model.calls:
        assert torch.equal(tokens[known], canvas[known])
    assert len(model.calls) == 6 and (canvas == MASK).sum() > 0


def test_same_generator_same_result_and_global_rng_untouched():
    model = FakeModel()
    s = MaskedTokenSampler(steps=5, guidance_scale=2.0)
    canvas, labels = torch.full((4, 16), MASK), torch.tensor([0, 1, 2, -1])
    state = torch.get_rng_state()
    a = s.sample(model.token_logits, canvas, labels, generator=gen(3), mask_token_id=MASK)
    b = s.sample(model.token_logits, canvas, labels, generator=gen(3), mask_token_id=MASK)
    c = s.sample(model.token_logits, canvas, labels, generator=gen(4), mask_token_id=MASK)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(canvas, torch.full((4, 16), MASK))  # the input is not modified


@pytest.mark.parametrize("ramp", ["linear", "constant"])
def test_guidance_mixes_cond_and_uncond_from_one_batched_call(ramp):
    model = FakeModel()
    s = MaskedTokenSampler(steps=4, guidance_scale=3.0, guidance_ramp=ramp)
    tokens = torch.randint(0, V + 1, (3, 16), generator=gen(5))
    labels = torch.tensor([2, 0, 1])
    for t in range(4):
        model.calls.clear()
        mixed = s.guided_logits(model.token_logits, tokens, labels, t)
        assert len(model.calls) == 1  # one forward of 2N rows: cond rows, then label -1 rows
        both_tokens, both_labels = model.calls[0]
        assert torch.equal(both_tokens, torch.cat([tokens, tokens]))
        assert both_labels.tolist() == [2, 0, 1, -1, -1, -1]
        c, u = model.token_logits(tokens, labels), model.token_logits(tokens, torch.full((3,), -1))
        w = 3.0 * (t + 1) / 4 if ramp == "linear" else 3.0
        torch.testing.assert_close(mixed, u + w * (c - u))
    model.calls.clear()
    s.sample(model.token_logits, torch.full((3, 16), MASK), labels, generator=gen(), mask_token_id=MASK)
    assert len(model.calls) == 4 and all(len(tok) == 6 for tok, _ in model.calls)


def test_guidance_off_is_one_plain_call_and_guidance_without_labels_is_an_error():
    model = FakeModel()
    s = MaskedTokenSampler(steps=2)
    s.sample(model.token_logits, torch.full((3, 16), MASK), torch.tensor([0, 1, 2]), gen(), mask_token_id=MASK)
    assert [lab.tolist() for _, lab in model.calls] == [[0, 1, 2]] * 2
    with pytest.raises(ValueError, match="needs labels"):
        MaskedTokenSampler(guidance_scale=2).sample(model.token_logits, torch.full((1, 16), MASK), None, gen(),
                                                     mask_token_id=MASK)


def test_top_k_samples_only_among_the_top_k_ids():
    logits = torch.randn(2000, 16, generator=gen(6))
    ids, log_prob = MaskedTokenSampler(top_k=3).sample_tokens(logits, gen(7))
    top = logits.topk(3, dim=1).indices
    assert (top == ids[:, None]).any(dim=1).all()
    kept = logits.masked_fill(logits < logits.topk(3, dim=1).values[:, -1:], -math.inf)
    torch.testing.assert_close(log_prob, kept.log_softmax(-1).gather(1, ids[:, None])[:, 0])
    # through the whole loop: every final token is among the top 3 of its position's logits
    model = FakeModel()
    out = MaskedTokenSampler(steps=3, top_k=3, choice_temperature=0).sample(
        lambda tok, lab: model.table[0].expand(len(tok), -1, -1), torch.full((50, 16), MASK), None, gen(),
        mask_token_id=MASK)
    assert (model.table[0].topk(3, dim=1).indices[None] == out[..., None]).any(-1).all()


def test_token_distribution_follows_the_softmax_at_the_token_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(40000, -1)
    ids, _ = MaskedTokenSampler(token_temperature=2.0).sample_tokens(logits, gen(8))
    freq = torch.bincount(ids, minlength=4).float() / len(ids)
    torch.testing.assert_close(freq, (logits[0] / 2).softmax(0), atol=0.01, rtol=0)


def test_samples_with_different_numbers_of_unknown_tokens_follow_their_own_counts():
    model = FakeModel()
    canvas = torch.randint(0, V, (4, 16), generator=gen(9))
    canvas[0] = MASK            # 16 unknown
    canvas[1, :5] = MASK        # 5
    canvas[2, 7] = MASK         # 1
    s = MaskedTokenSampler(steps=5, schedule="cosine")
    out = s.sample(model.token_logits, canvas, generator=gen(), mask_token_id=MASK)
    start = torch.tensor([16, 5, 1, 0])
    expected = torch.cat([start[None], s.mask_counts(start)[:-1]])  # (T, N) masked at each call
    assert torch.stack([(tok == MASK).sum(1) for tok, _ in model.calls]).tolist() == expected.tolist()
    assert torch.equal(out[3], canvas[3]) and (out != MASK).all()


def test_a_canvas_without_unknown_tokens_is_returned_without_a_forward():
    model = FakeModel()
    canvas = torch.randint(0, V, (2, 16), generator=gen(10))
    assert torch.equal(MaskedTokenSampler().sample(model.token_logits, canvas, None, gen(), mask_token_id=MASK),
                       canvas)
    assert model.calls == []


def test_bad_sampler_settings_name_the_value():
    with pytest.raises(ValueError, match="unknown mask schedule 'wavy'"):
        MaskedTokenSampler(schedule="wavy")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        MaskedTokenSampler(steps=0)


# ---------------------------------------------------------------- regions and blur

def test_a_token_is_unknown_when_any_of_its_pixels_is_masked():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 5, 11] = True       # token (1, 2)
    mask[0, 12:16, 0:4] = True  # token (3, 0)
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 1, 2] = expected[0, 3, 0] = True
    assert torch.equal(tokens_of_pixels(mask, (4, 4)), expected)


def test_gaussian_blur_is_the_2d_gaussian_and_keeps_constants():
    x = torch.rand(2, 3, 20, 20, generator=gen(11))
    k = gaussian_kernel1d(1.5)
    assert k.numel() == 11 and abs(float(k.sum()) - 1) < 1e-6
    reference = F.conv2d(x.reshape(6, 1, 20, 20), torch.outer(k, k)[None, None]).reshape(2, 3, 10, 10)
    torch.testing.assert_close(gaussian_blur(x, 1.5)[..., 5:15, 5:15], reference)
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 8, 8), 0.3), 2.0), torch.full((1, 1, 8, 8), 0.3))


# ---------------------------------------------------------------- pipelines

def images(n=3, seed=12):
    return torch.rand(n, 1, 16, 16, generator=gen(seed))


def test_generate_shapes_labels_and_determinism():
    model = FakeModel()
    a = generate(model, labels=[0, 1, 2, -1], sampler=MaskedTokenSampler(steps=4), generator=gen(1))
    assert a.shape == (4, 1, 16, 16) and model.calls[0][1].tolist() == [0, 1, 2, -1]
    b = generate(model, labels=[0, 1, 2, -1], sampler=MaskedTokenSampler(steps=4), generator=gen(1))
    assert torch.equal(a, b)
    assert generate(model, 5, labels=1, batch_size=2, generator=gen()).shape == (5, 1, 16, 16)
    with pytest.raises(ConfigError, match="label 3 is out of range: this model has classes 0..2"):
        generate(model, labels=[0, 3])
    with pytest.raises(ConfigError, match="unconditional"):
        generate(FakeModel(num_classes=0), 2, labels=[0, 1])
    with pytest.raises(ConfigError, match="guidance scale 2.0 needs class labels"):
        generate(model, 2, sampler=MaskedTokenSampler(guidance_scale=2))
    with pytest.raises(ConfigError, match="not a masked token model"):
        generate(torch.nn.Linear(2, 2), 2)


def test_inpaint_keeps_the_pixels_outside_the_mask_and_fills_only_touched_tokens():
    model, x = FakeModel(), images()
    mask = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 3:6, 9:14] = True  # tokens rows 0-1, columns 2-3
    out = inpaint(model, x, mask, sampler=MaskedTokenSampler(steps=3), generator=gen())
    assert torch.equal(out[~mask.expand_as(out)], x[~mask.expand_as(x)])
    assert torch.equal(out[mask.expand_as(out)], model.tokenizer.last[mask.expand_as(out)])
    first = model.calls[0][0].reshape(3, 4, 4)
    unknown = torch.zeros(4, 4, dtype=torch.bool)
    unknown[0:2, 2:4] = True
    assert torch.equal(first == MASK, unknown.expand(3, -1, -1))
    assert torch.equal(first[:, ~unknown], model.tokenizer.encode(x)[:, ~unknown])


@pytest.mark.parametrize("side, amount, kept_out, kept_in", [
    ("right", 0.25, (slice(None), slice(0, 12)), (slice(None), slice(4, 16))),
    ("left", 2, (slice(None), slice(8, 16)), (slice(None), slice(0, 8))),
    ("top", 1, (slice(4, 16), slice(None)), (slice(0, 12), slice(None))),
    ("bottom", 0.5, (slice(0, 8), slice(None)), (slice(8, 16), slice(None))),
])
def test_outpaint_shifts_the_image_away_from_the_side_and_fills_the_strip(side, amount, kept_out, kept_in):
    model, x = FakeModel(), images()
    out = outpaint(model, x, side, amount, sampler=MaskedTokenSampler(steps=3), generator=gen())
    assert out.shape == x.shape
    assert torch.equal(out[(..., *kept_out)], x[(..., *kept_in)])
    first = model.calls[0][0].reshape(3, 4, 4)
    token_out = tuple(slice(None if s.start is None else s.start // 4, None if s.stop is None else s.stop // 4)
                      for s in kept_out)
    token_in = tuple(slice(None if s.start is None else s.start // 4, None if s.stop is None else s.stop // 4)
                     for s in kept_in)
    assert torch.equal(first[(slice(None), *token_out)], model.tokenizer.encode(x)[(slice(None), *token_in)])
    assert int((first == MASK).sum()) == 3 * (16 - first[(slice(None), *token_out)][0].numel())


def test_outpaint_and_edit_reject_bad_sides_amounts_and_boxes():
    model, x = FakeModel(), images(1)
    with pytest.raises(ConfigError, match="unknown side 'up'"):
        outpaint(model, x, "up", 0.25)
    with pytest.raises(ConfigError, match="leaves no image"):
        outpaint(model, x, "right", 4)
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
        outpaint(model, x, "right", 1.0)
    with pytest.raises(ConfigError, match="box \\(4, 4, 2, 8\\) is empty or outside"):
        edit(model, x, (4, 4, 2, 8), 1)
    with pytest.raises(ConfigError, match="outside the 16x16 image"):
        edit(model, x, (0, 0, 17, 8), 1)


def test_edit_regenerates_the_grown_box_under_the_new_class_and_blends():
    model, x = FakeModel(), images(2)
    out = edit(model, x, (5, 5, 7, 7), 2, sampler=MaskedTokenSampler(steps=3), generator=gen())
    # the box touches token (1, 1); grown by one token: tokens 0..2 x 0..2 = pixels 0..11
    first, labels = model.calls[0]
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0:3, 0:3] = True
    assert torch.equal(first.reshape(2, 4, 4) == MASK, region.expand(2, -1, -1)) and labels.tolist() == [2, 2]
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[:12, :12] = False
    assert torch.equal(out[..., outside], x[..., outside])
    box = torch.zeros(1, 1, 16, 16)
    box[..., 5:7, 5:7] = 1
    alpha = gaussian_blur(box, 2.0) * (~outside).float()
    torch.testing.assert_close(out, alpha * model.tokenizer.last + (1 - alpha) * x)
    assert 0 < float(alpha.max()) < 1 and float(alpha[..., 0, 0]) > 0  # soft edge, inside the grown region


def test_pipeline_returns_pil_images_and_tensors():
    pipe = MaskedImagePipeline(FakeModel(), MaskedTokenSampler(steps=2))
    out = pipe(n=3, labels=[0, 1, 2], generator=gen())
    assert out.tensors.shape == (3, 1, 16, 16) and len(out.images) == 3
    assert out.images[0].mode == "L" and out.images[0].size == (16, 16)
    assert out.images[1].getpixel((0, 0)) == round(float(out.tensors[1, 0, 0, 0]) * 255)
    filled = pipe.inpaint(images(2), torch.ones(16, 16, dtype=torch.bool), generator=gen())
    assert filled.tensors.shape == (2, 1, 16, 16)
    assert to_pil(torch.rand(1, 3, 4, 5))[0].mode == "RGB" and to_pil(torch.rand(1, 3, 4, 5))[0].size == (5, 4)


# ---------------------------------------------------------------- command line

@pytest.fixture
def fake_checkpoint(monkeypatch):
    from mimkit.data.config import DataConfig

    config = SimpleNamespace(method="fake", data=DataConfig(name="digits"),
                             model=SimpleNamespace(img_size=16, in_chans=1))
    monkeypatch.setattr("mimkit.registry.load_model", lambda path, device="cpu": (FakeModel(), config))


def test_cli_generate_inpaint_outpaint_edit(fake_checkpoint, tmp_path, capsys):
    from mimkit.cli import main

    out = tmp_path / "grid.png"
    assert main(["generate", "ckpt", "--per-class", "2", "--steps", "3", "--scale", "1", "--no-progress",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 3 * 18 + 2)  # 3 classes (rows) x 2 samples
    for argv in (["inpaint", "--box", "2,2,9,9"], ["outpaint", "--side", "top", "--amount", "1"],
                 ["edit", "--box", "4,4,8,8", "--label", "1"]):
        assert main([argv[0], "ckpt", *argv[1:], "--n", "2", "--limit", "20", "--steps", "2", "--scale", "1",
                     "--no-progress", "--out", str(out)]) == 0
        assert Image.open(out).size == (3 * 18 + 2, 2 * 18 + 2)
    capsys.readouterr()
    for argv, message in [(["generate", "ckpt", "--labels", "0,5"], "label 5 is out of range"),
                          (["outpaint", "ckpt", "--side", "up"], "unknown side 'up'"),
                          (["edit", "ckpt", "--box", "1,2,3", "--label", "0"], "--box must be N,N,N,N"),
                          (["inpaint", "ckpt", "--box", "0,0,99,4"], "outside the 16x16 image")]:
        extra = [] if argv[0] == "generate" else ["--limit", "4"]
        assert main([*argv, *extra, "--no-progress", "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
