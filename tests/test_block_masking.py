"""BEiT block-wise masking, style="union" (the default; MAE's block sampling): exact counts, masks
that are unions of allowed rectangles, determinism. style="unilm" (BEiT v2's, the official
algorithm): tests/test_beitv2_fidelity.py."""
import warnings

import numpy as np
import pytest
import torch

from mimkit.nn import BlockMasking, allowed_block_shapes, block_masking, num_masked_patches


def shapes_by_definition(grid, min_area, max_area, min_aspect):
    """Every rectangle (h, w) in the grid with area and h / w within bounds, written out plainly."""
    gh, gw = grid
    return {(h, w) for h in range(1, gh + 1) for w in range(1, gw + 1)
            if min_area <= h * w <= max_area and min_aspect <= h / w + 1e-12 and h / w <= 1 / min_aspect + 1e-12}


def is_union_of_blocks(mask: np.ndarray, shapes) -> bool:
    """True when every hidden patch lies in some allowed rectangle that is hidden entirely, i.e. the
    mask equals the union of all allowed rectangles it contains (a morphological opening)."""
    table = np.pad(mask.astype(int).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    covered = np.zeros_like(mask)
    for h, w in shapes:
        inside = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]  # hidden patches per position
        for top, left in zip(*np.nonzero(inside == h * w)):
            covered[top:top + h, left:left + w] = True
    return np.array_equal(covered, mask)


def test_union_checker_on_hand_made_masks():
    shapes = shapes_by_definition((4, 4), 4, 16, 0.3)
    ell = np.zeros((4, 4), bool)
    ell[0:2, 0:2] = ell[1:3, 1:3] = True  # two 2x2 blocks overlapping in one patch: 7 patches
    assert is_union_of_blocks(ell, shapes) and ell.sum() == 7
    ell[3, 3] = True  # a lone patch belongs to no block of >= 4 patches
    assert not is_union_of_blocks(ell, shapes)
    line = np.zeros((4, 4), bool)
    line[0, :] = True  # 1x4: area 4 but aspect 0.25 < 0.3
    assert not is_union_of_blocks(line, shapes)


def test_allowed_shapes_by_hand():
    # 4x4 grid, >= 4 patches, aspect in [0.3, 3.33]: no 1-wide strip fits (1x4 has aspect 0.25)
    assert set(allowed_block_shapes((4, 4), 4, None, 0.3)) == {
        (2, 2), (2, 3), (3, 2), (2, 4), (4, 2), (3, 3), (3, 4), (4, 3), (4, 4)}
    assert set(allowed_block_shapes((14, 14), 16, 75, 0.3)) == shapes_by_definition((14, 14), 16, 75, 0.3)


@pytest.mark.parametrize("grid, min_area, counts, n", [
    ((7, 7), 4, [c for c in range(4, 50) if c not in (5, 7)], 8),
    ((14, 14), 16, [16, 40, 59, 75, 98, 150, 196], 6),
    ((5, 9), 4, [4, 6, 10, 18, 27, 44], 12),
])
def test_exact_count_and_union_of_allowed_blocks(grid, min_area, counts, n):
    shapes = shapes_by_definition(grid, min_area, grid[0] * grid[1], 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the single-patch fallback must not be needed
        for count in counts:
            masks = block_masking(n, grid, count, min_area, generator=torch.Generator().manual_seed(count))
            assert masks.shape == (n, *grid) and masks.dtype == torch.bool
            assert masks.flatten(1).sum(1).tolist() == [count] * n
            for m in masks.numpy():
                assert is_union_of_blocks(m, shapes), (grid, count, m.astype(int))


def test_max_block_size_is_respected():
    shapes = shapes_by_definition((7, 7), 4, 9, 0.3)
    masks = block_masking(30, (7, 7), 20, 4, max_num_patches=9, generator=torch.Generator().manual_seed(0))
    assert (masks.flatten(1).sum(1) == 20).all()
    assert all(is_union_of_blocks(m, shapes) for m in masks.numpy())


def test_masks_are_reproducible_and_spread_over_the_grid():
    gen = BlockMasking((7, 7), 20, 4)
    a = gen(64, torch.Generator().manual_seed(3), flat=True)
    b = gen(64, torch.Generator().manual_seed(3), flat=True)
    c = gen(64, torch.Generator().manual_seed(4), flat=True)
    assert a.shape == (64, 49) and torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = gen(8)
    torch.manual_seed(0)
    assert torch.equal(d, gen(8))  # no generator: the global RNG
    assert a.any(0).all()  # every patch is hidden in some mask
    assert len({tuple(m.tolist()) for m in a}) > 50  # the masks differ


def test_ratio_count_and_bad_arguments():
    assert num_masked_patches(0.4, 49) == 20 and num_masked_patches(75 / 196, 196) == 75
    assert num_masked_patches(0.5, 49) == 25  # round half up
    assert block_masking(3, (4, 4), 0, 4).sum() == 0
    with pytest.raises(ValueError, match="fewer than one block"):
        BlockMasking((7, 7), 3, 4)
    with pytest.raises(ValueError, match="cannot mask 50 of 49"):
        BlockMasking((7, 7), 50, 4)


def test_unreachable_count_falls_back_to_exact_count_with_a_warning():
    # 5 patches: no single allowed block has 5, and two blocks of >= 4 cover >= 6
    with pytest.warns(UserWarning, match="exactly 5 patches"):
        masks = block_masking(2, (7, 7), 5, 4, generator=torch.Generator().manual_seed(0))
    assert (masks.flatten(1).sum(1) == 5).all()
