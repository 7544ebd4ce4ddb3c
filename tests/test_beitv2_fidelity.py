"""BEiT v2 against the official code (microsoft/unilm beit2/): the pretraining init of
modeling_pretrain.py (truncation at +-std, default init of the aggregation blocks), the block
masking of masking_generator.py (a reference written here from its algorithm, driven by the same
uniform numbers, must give identical masks), and the recipe defaults (run_beitv2_pretraining.py,
PRETRAINING.md; MaskGIT's maskgit_class_cond_config.py)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from mimkit.methods import maskgit
from mimkit.methods.beitv2 import PRESETS, BEiTv2Config, beitv2_normal_
from mimkit.nn import BlockMasking
from mimkit.nn.block_masking import _Uniforms
from test_beitv2 import tiny_beit


# ------------------------------------------------------------------ the reference masking generator
class UniformRandom:
    """The three calls the reference makes on Python's `random` / numpy, each from one U(0, 1)
    draw of `uniform` (so both implementations see the same numbers)."""

    def __init__(self, uniform):
        self.uniform01 = uniform

    def uniform(self, a, b):  # random.uniform
        return a + (b - a) * self.uniform01()

    def randint(self, a, b):  # random.randint, inclusive
        return a + min(int(self.uniform01() * (b - a + 1)), b - a)

    def choice(self, n, k):  # np.random.choice(n, k, replace=False): a uniform k-subset, one at a time
        pool, out = list(range(n)), []
        for _ in range(k):
            out.append(pool.pop(min(int(self.uniform01() * len(pool)), len(pool) - 1)))
        return np.array(out, dtype=np.int64)


class ReferenceMaskingGenerator:
    """unilm beit2/masking_generator.py's MaskingGenerator, step by step, with `rng` for randomness;
    `blocks` records the (h, w) of every block it places."""

    def __init__(self, input_size, num_masking_patches, min_num_patches=4, max_num_patches=None, min_aspect=0.3,
                 rng=None):
        self.height, self.width = input_size
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        self.log_aspect_ratio = (math.log(min_aspect), math.log(1 / min_aspect))
        self.rng, self.blocks, self.filled = rng, [], 0

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for _attempt in range(10):
            target_area = self.rng.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(self.rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = self.rng.randint(0, self.height - h)
                left = self.rng.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                    self.blocks.append((h, w))
                if delta > 0:
                    break
        return delta

    def __call__(self):
        mask = np.zeros((self.height, self.width), dtype=np.int32)
        mask_count = 0
        while mask_count < self.num_masking_patches:
            max_mask_patches = min(self.num_masking_patches - mask_count, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            mask_count += delta
        assert mask_count <= self.num_masking_patches
        if mask_count < self.num_masking_patches:
            delta = self.num_masking_patches - mask_count
            mask_x, mask_y = (mask == 0).nonzero()
            to_mask = self.rng.choice(mask_x.shape[0], delta)
            mask[mask_x[to_mask], mask_y[to_mask]] = 1
            self.filled += delta
        assert mask.sum() == self.num_masking_patches
        return mask


@pytest.mark.parametrize("grid, count, min_block, max_block, aspect, seed", [
    ((14, 14), 75, 16, None, 0.3, 0),
    ((14, 14), 118, 16, None, 0.3, 1),
    ((14, 14), 75, 16, 30, 0.3, 2),
    ((7, 7), 20, 4, None, 0.3, 3),
    ((5, 9), 27, 4, None, 0.5, 4),
    ((4, 4), 16, 4, None, 0.3, 5),  # blocks must be < 4 x 4: the last patches always come from the fill
])
def test_masks_equal_the_reference_algorithm(grid, count, min_block, max_block, aspect, seed):
    n = 40
    masks = BlockMasking(grid, count, min_block, max_block, aspect, style="unilm")(
        n, generator=torch.Generator().manual_seed(seed))
    ref = ReferenceMaskingGenerator(grid, count, min_block, max_block, aspect,
                                    rng=UniformRandom(_Uniforms(torch.Generator().manual_seed(seed))))
    expected = np.stack([ref() for _ in range(n)]).astype(bool)
    assert masks.shape == (n, *grid) and masks.dtype == torch.bool
    assert np.array_equal(masks.numpy(), expected)
    assert masks.flatten(1).sum(1).tolist() == [count] * n
    assert all(h < grid[0] and w < grid[1] for h, w in ref.blocks)  # the reference's strict bounds


def test_block_statistics_on_the_paper_setting():
    """75 of 14 x 14, blocks of >= 16 before rounding: every mask has exactly 75 patches, and the
    rounding of h and w (plus the < 16 remainders) makes blocks under 16 patches common."""
    g = torch.Generator().manual_seed(0)
    n = 300
    masks = BlockMasking((14, 14), 75, 16, None, 0.3, style="unilm")(n, generator=g)
    assert (masks.flatten(1).sum(1) == 75).all()
    ref = ReferenceMaskingGenerator((14, 14), 75, 16, rng=UniformRandom(_Uniforms(torch.Generator().manual_seed(0))))
    assert np.array_equal(np.stack([ref() for _ in range(n)]).astype(bool), masks.numpy())
    areas = np.array([h * w for h, w in ref.blocks])
    small = (areas < 16).mean()
    assert 0.3 < small < 0.6, small  # measured 0.47 of 1238 blocks with this seed
    assert areas.min() >= 1 and max(max(b) for b in ref.blocks) <= 13
    assert 0 < ref.filled / (75 * n) < 0.02  # the single-patch fill happens but is rare (measured 0.8%)
    # blocks are spread over the grid: every patch is hidden in some mask, and the masks differ
    assert masks.any(0).all() and len({tuple(m.flatten().tolist()) for m in masks}) == n


def test_unilm_style_is_reproducible_and_uses_the_global_rng_without_generator():
    gen = BlockMasking((14, 14), 75, 16, style="unilm")
    a = gen(8, torch.Generator().manual_seed(3), flat=True)
    assert a.shape == (8, 196) and torch.equal(a, gen(8, torch.Generator().manual_seed(3), flat=True))
    assert not torch.equal(a, gen(8, torch.Generator().manual_seed(4), flat=True))
    torch.manual_seed(0)
    b = gen(4)
    torch.manual_seed(0)
    assert torch.equal(b, gen(4))
    with pytest.raises(ValueError, match="style"):
        BlockMasking((14, 14), 75, 16, style="nope")


def test_beitv2_draws_unilm_masks():
    model = tiny_beit()
    assert model.masking.style == "unilm"
    c = model.config
    expected = BlockMasking(c.grid_size, c.masked_count, c.min_mask_patches, None, c.mask_min_aspect, style="unilm")(
        5, generator=torch.Generator().manual_seed(7), flat=True)
    assert torch.equal(model.draw_mask(5, generator=torch.Generator().manual_seed(7)), expected)


# ------------------------------------------------------------------ init (modeling_pretrain.py)
def test_trunc_normal_truncates_at_one_std():
    torch.manual_seed(0)
    x = beitv2_normal_(torch.empty(1000, 1000))
    assert x.abs().max().item() <= 0.02
    # N(0, 1) truncated to [-1, 1] has std sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)) = 0.5396
    sigma = math.sqrt(1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / math.erf(1 / math.sqrt(2)))
    assert abs(sigma - 0.5396) < 1e-3
    assert abs(x.std().item() - sigma * 0.02) < 2e-4 and abs(x.mean().item()) < 1e-4


def test_init_of_the_main_network():
    model = tiny_beit(embed_dim=128, num_heads=2, depth=3, early_layers=2, head_layers=2, abs_pos_embed=True, seed=1)
    for token in (model.cls_token, model.mask_token, model.pos_embed, model.patch_embed.proj.weight,
                  model.lm_head.weight):
        assert 0 < token.abs().max().item() <= 0.02
    big = torch.cat([model.pos_embed.flatten(), model.lm_head.weight.flatten()])
    assert abs(big.std().item() - 0.54 * 0.02) < 0.001
    assert not model.lm_head.bias.any() and not model.patch_embed.proj.bias.any()
    for i, block in enumerate(model.blocks):
        scale = math.sqrt(2 * (i + 1))  # fix_init_weight
        for name, m in block.named_modules():
            if isinstance(m, nn.Linear):
                bound = 0.02 / scale if name in ("attn.proj", "mlp.fc2") else 0.02
                assert m.weight.abs().max().item() <= bound * (1 + 1e-6), name
                assert m.weight.abs().max().item() > 0.9 * bound, name
                assert m.bias is None or not m.bias.any()
        assert not block.attn.q_bias.any() and not block.attn.v_bias.any()
        assert torch.equal(block.norm1.weight, torch.ones(128)) and not block.norm1.bias.any()


def test_aggregation_blocks_keep_pytorchs_default_init():
    """The reference builds cls_pt_layers after its init pass: default nn.Linear (kaiming-uniform,
    bound 1 / sqrt(fan_in) for weight and bias), then only the rescale by early_layers + i + 1."""
    model = tiny_beit(embed_dim=128, num_heads=2, depth=3, early_layers=2, head_layers=2, seed=2)
    early = model.config.early_layers
    for i, block in enumerate(model.cls_pt_layers):
        scale = math.sqrt(2 * (early + i + 1))
        for name, m in block.named_modules():
            if not isinstance(m, nn.Linear):
                continue
            bound = 1 / math.sqrt(m.in_features)
            w_bound = bound / scale if name in ("attn.proj", "mlp.fc2") else bound
            w = m.weight.flatten()
            assert w.abs().max().item() <= w_bound * (1 + 1e-6) and w.abs().max().item() > 0.95 * w_bound, name
            assert abs(w.std().item() - w_bound / math.sqrt(3)) < 0.05 * w_bound / math.sqrt(3), name  # uniform
            if m.bias is not None:
                assert m.bias.any() and m.bias.abs().max().item() <= bound, name
        assert not block.attn.q_bias.any() and torch.equal(block.norm2.weight, torch.ones(128))
    # same distribution as a fresh nn.Linear of that shape
    fresh = nn.Linear(128, 512)
    fc1 = model.cls_pt_layers[0].mlp.fc1
    assert abs(fc1.weight.std().item() - fresh.weight.std().item()) < 0.03 * fresh.weight.std().item()
    # reset_parameters redraws them the same way (and leaves the main network's truncation)
    model.reset_parameters()
    assert fc1.weight.abs().max().item() > 0.02 and model.blocks[0].mlp.fc1.weight.abs().max().item() <= 0.02


# ------------------------------------------------------------------ recipe defaults
def test_defaults_follow_the_official_recipe():
    default = BEiTv2Config(tokenizer_config={}, img_size=224, patch_size=16)
    assert default.grid_size == (14, 14) and default.masked_count == 75  # --num_mask_patches 75
    assert default.min_mask_patches == 16 and default.mask_min_aspect == 0.3 and default.layer_scale == 0.1
    assert default.early_layers == 9 and default.head_layers == 2
    assert default.drop_path == 0.1  # run_beitv2_pretraining.py's --drop_path default
    paper = BEiTv2Config(**PRESETS["beitv2_vit_base_patch16"]["model"])
    assert paper.masked_count == 75 and paper.drop_path == 0.0  # PRETRAINING.md: 0 for 300 epochs
    assert PRESETS["beitv2_vit_base_patch16"]["optim"]["betas"] == [0.9, 0.98]  # 0.98 for 300 epochs
    # MaskGIT's class-conditional ImageNet config has no label dropout
    assert maskgit.PRESETS["maskgit_imagenet_256"]["model"]["label_dropout"] == 0.0
