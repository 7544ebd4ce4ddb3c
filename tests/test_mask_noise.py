"""MAE's three sampling strategies (random, block, grid): exact kept counts and the structure of
each, checked on hand-made cases; the MAE config refuses an unknown strategy."""
import numpy as np
import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.nn import allowed_block_shapes, mask_noise, random_masking
from test_block_masking import is_union_of_blocks


def kept_mask(kind, n, grid, keep, **kw):
    """(N, gh, gw) bool, True = kept, through random_masking as MAE uses it."""
    length = grid[0] * grid[1]
    noise = mask_noise(kind, n, grid, keep, generator=torch.Generator().manual_seed(0), **kw)
    masked = random_masking(torch.zeros(n, length, 1), 1 - keep / length, noise=noise)
    return (masked.mask == 0).reshape(n, *grid)


@pytest.mark.parametrize("kind", ["random", "block", "grid"])
def test_every_strategy_keeps_exactly_keep_patches(kind):
    kept = kept_mask(kind, 16, (7, 7), 12)
    assert kept.sum(dim=(1, 2)).tolist() == [12] * 16


def test_grid_on_an_even_grid_is_one_patch_per_2x2_cell():
    # 8x8 patches, 75% masking: the kept 16 are exactly one lattice {(i, j): i = a, j = b mod 2}
    kept = kept_mask("grid", 32, (8, 8), 16).numpy()
    offsets = set()
    for sample in kept:
        rows, cols = np.nonzero(sample)
        assert len(set(rows % 2)) == 1 and len(set(cols % 2)) == 1
        assert len(rows) == 16
        offsets.add((rows[0] % 2, cols[0] % 2))
    assert len(offsets) == 4  # all four offsets occur over 32 images


def test_grid_on_an_odd_grid_keeps_lattice_patches_first():
    # 7x7: the (0, 0) lattice has 16 patches, (1, 1) has 9; keeping 12 takes 12 lattice patches, or all
    # 9 plus 3 others, and never skips a lattice patch for a non-lattice one
    kept = kept_mask("grid", 64, (7, 7), 12).numpy()
    for sample in kept:
        counts = {(a, b): int(sample[a::2, b::2].sum()) for a in (0, 1) for b in (0, 1)}
        lattice = max(counts, key=lambda k: counts[k] / sample[k[0]::2, k[1]::2].size)
        size = sample[lattice[0]::2, lattice[1]::2].size
        assert counts[lattice] == min(12, size)


def test_block_hides_a_union_of_allowed_rectangles():
    hidden = ~kept_mask("block", 16, (7, 7), 12, min_block=4).numpy()
    shapes = allowed_block_shapes((7, 7), 4)
    assert all(is_union_of_blocks(m, shapes) for m in hidden)
    assert (hidden.sum(axis=(1, 2)) == 37).all()


def test_random_noise_is_uniform_and_unknown_kind_is_refused():
    noise = mask_noise("random", 4, (7, 7), 12, generator=torch.Generator().manual_seed(1))
    assert noise.shape == (4, 49) and 0 <= noise.min() and noise.max() < 1
    with pytest.raises(ValueError, match="mask type"):
        mask_noise("stripes", 1, (7, 7), 12)


def test_mae_uses_its_mask_type_and_refuses_unknown_ones():
    config = dict(img_size=16, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                  decoder_depth=1, decoder_num_heads=2)
    torch.manual_seed(0)
    out = MAE(MAEConfig(**config, mask_type="grid"))(torch.rand(6, 1, 16, 16))
    kept = (out.mask == 0).reshape(6, 8, 8).numpy()
    for sample in kept:  # 8x8 grid, 75%: one 2x2 lattice exactly
        rows, cols = np.nonzero(sample)
        assert len(rows) == 16 and len(set(rows % 2)) == 1 and len(set(cols % 2)) == 1
    with pytest.raises(ConfigError, match="mask_type"):
        MAEConfig(**config, mask_type="stripes").validate()
