"""Block-wise masking (BEiT): hide a union of random rectangles of patches, with an exact count.

Two styles, both drawing every random number from `generator` (or torch's global RNG):

style="unilm" (BEiT / BEiT v2's own MaskingGenerator, unilm beit2/masking_generator.py; what
BEiTv2 uses). Until the target count is reached: up to ten tries per block of a target area
U(min_num_patches, m) (m = min(remaining, max_num_patches), so below min_num_patches once fewer
than min_num_patches remain), aspect h / w log-uniform in [min_aspect, 1 / min_aspect],
h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)) (Python's round), kept only when
h < grid height and w < grid width (strictly) and it adds between 1 and m new patches, at a
uniform position; when ten tries in a row add nothing the loop stops and uniformly chosen visible
patches are hidden to reach the count. The rounding makes blocks of fewer than min_num_patches
common (e.g. area 16, aspect 1.5 -> 5 x 3), and the fill adds single patches.

style="union" (mimkit's variant, the default; used by MAE's block sampling): the count is exact
AND the mask stays a union of allowed rectangles (area >= min_num_patches, <= max_num_patches,
aspect in bounds):
- a rectangle is kept only when it leaves 0 or at least min_num_patches patches to place (a
  smaller remainder can often not be covered by any allowed rectangle);
- when random draws fail, every allowed rectangle at every position is scored at once (summed-area
  table) and one adding exactly the remainder (else one keeping the rule above) is drawn;
- if that is impossible too, the mask is redrawn from scratch (a few times; then, as a last resort
  that never happened in the tests, BEiT v2's single-patch correction with a warning).
"""
import math
import warnings

import numpy as np
import torch

from .patch_embed import to_pair

RANDOM_ATTEMPTS = 10  # BEiT's consecutive failed draws before giving up on random placement
RESTARTS = 20
STYLES = ("union", "unilm")


def num_masked_patches(ratio: float, num_patches: int) -> int:
    """round(ratio * L): the exact number of patches a block mask hides."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    return int(math.floor(ratio * num_patches + 0.5))


def allowed_block_shapes(grid_size, min_num_patches: int, max_num_patches: int | None = None,
                         min_aspect: float = 0.3) -> list[tuple[int, int]]:
    """Every (h, w) fitting the grid with min_num_patches <= h*w <= max_num_patches and
    min_aspect <= h / w <= 1 / min_aspect."""
    gh, gw = to_pair(grid_size)
    top = gh * gw if max_num_patches is None else max_num_patches
    eps = 1e-9
    return [(h, w) for h in range(1, gh + 1) for w in range(1, gw + 1)
            if min_num_patches <= h * w <= top and min_aspect - eps <= h / w <= 1 / min_aspect + eps]


class _Uniforms:
    """U(0, 1) floats from a torch.Generator (or the global RNG), fetched in chunks."""

    def __init__(self, generator: torch.Generator | None, chunk: int = 64):
        self.generator, self.chunk, self.values = generator, chunk, []

    def __call__(self) -> float:
        if not self.values:
            self.values = torch.rand(self.chunk, generator=self.generator, dtype=torch.float64).tolist()
        return self.values.pop()


class BlockMasking:
    """Draws (N, h, w) bool masks, True = hidden, of exactly `num_masked` patches each.

    grid_size: (h, w) patch grid. min_num_patches / max_num_patches (None = no upper bound): the
    area range of one rectangle. min_aspect: h / w of a rectangle lies in [min_aspect, 1/min_aspect].
    style: "union" (every hidden patch in an allowed rectangle) or "unilm" (BEiT's MaskingGenerator,
    rounding and single-patch fill included); see the module docstring.
    """

    def __init__(self, grid_size, num_masked: int, min_num_patches: int = 16, max_num_patches: int | None = None,
                 min_aspect: float = 0.3, style: str = "union"):
        if style not in STYLES:
            raise ValueError(f"block masking style must be one of {', '.join(STYLES)}, got {style!r}")
        self.style = style
        self.grid_size = to_pair(grid_size)
        length = self.grid_size[0] * self.grid_size[1]
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        if min_num_patches < 1 or (max_num_patches is not None and max_num_patches < min_num_patches):
            raise ValueError(f"block sizes need 1 <= min_num_patches <= max_num_patches, got {min_num_patches} "
                             f"and {max_num_patches}")
        if not 0 <= num_masked <= length:
            raise ValueError(f"cannot mask {num_masked} of {length} patches")
        if style == "union" and 0 < num_masked < min_num_patches:
            raise ValueError(f"{num_masked} masked patches is fewer than one block of min_num_patches="
                             f"{min_num_patches}; lower min_num_patches or mask more")
        self.num_masked, self.min_num_patches, self.max_num_patches = num_masked, min_num_patches, max_num_patches
        self.min_aspect = min_aspect
        self.shapes = allowed_block_shapes(self.grid_size, min_num_patches, max_num_patches, min_aspect)
        self.shape_set = set(self.shapes)
        if style == "union" and num_masked and not self.shapes:
            raise ValueError(f"no rectangle of {min_num_patches}..{max_num_patches} patches with aspect in "
                             f"[{min_aspect}, {1 / min_aspect:.3g}] fits the {self.grid_size} grid")

    def __call__(self, n: int, generator: torch.Generator | None = None, flat: bool = False) -> torch.Tensor:
        """(N, h, w) bool masks (or (N, L) with flat=True), drawn from `generator`."""
        uniform = _Uniforms(generator)
        draw = self.draw_unilm if self.style == "unilm" else self.draw_one
        masks = torch.from_numpy(np.stack([draw(uniform) for _ in range(n)]) if n else
                                 np.zeros((0, *self.grid_size), dtype=bool))
        return masks.flatten(1) if flat else masks

    # ------------------------------------------------------------------ one mask, style="unilm"
    def draw_unilm(self, uniform) -> np.ndarray:
        """BEiT's MaskingGenerator.__call__: blocks until the count is reached or a block cannot be
        placed in ten tries, then uniformly chosen visible patches to reach the count."""
        mask = np.zeros(self.grid_size, dtype=bool)
        cap = self.num_masked if self.max_num_patches is None else self.max_num_patches
        count = 0
        while count < self.num_masked:
            added = self.unilm_block(mask, min(self.num_masked - count, cap), uniform)
            if added == 0:
                break
            count += added
        if count < self.num_masked:  # (a block never adds more than the remainder, so never above)
            flat = mask.reshape(-1)
            visible = np.flatnonzero(~flat)  # row-major, as numpy's nonzero
            pool = list(range(len(visible)))
            for _ in range(self.num_masked - count):  # a uniform subset, drawn one patch at a time
                flat[visible[pool.pop(min(int(uniform() * len(pool)), len(pool) - 1))]] = True
            mask = flat.reshape(self.grid_size)
        return mask

    def unilm_block(self, mask: np.ndarray, limit: int, uniform) -> int:
        """BEiT's MaskingGenerator._mask: up to ten draws of one block adding 1..limit new patches;
        hides it in `mask` and returns how many patches it added (0 = none placed)."""
        gh, gw = self.grid_size
        log_lo, log_hi = math.log(self.min_aspect), -math.log(self.min_aspect)
        for _ in range(RANDOM_ATTEMPTS):
            area = self.min_num_patches + (limit - self.min_num_patches) * uniform()  # random.uniform(min, limit)
            aspect = math.exp(log_lo + (log_hi - log_lo) * uniform())
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h >= gh or w >= gw:  # the reference requires h < height and w < width
                continue
            top = min(int(uniform() * (gh - h + 1)), gh - h)  # random.randint(0, gh - h)
            left = min(int(uniform() * (gw - w + 1)), gw - w)
            new = h * w - int(mask[top:top + h, left:left + w].sum())
            if 0 < new <= limit:
                mask[top:top + h, left:left + w] = True
                return new
        return 0

    # ------------------------------------------------------------------ one mask, style="union"
    def draw_one(self, uniform) -> np.ndarray:
        for _ in range(RESTARTS):
            mask = np.zeros(self.grid_size, dtype=bool)
            count = 0
            while count < self.num_masked:
                remaining = self.num_masked - count
                rect = self.random_block(mask, remaining, uniform) or self.searched_block(mask, remaining, uniform)
                if rect is None:
                    break
                top, left, h, w = rect
                count += int((~mask[top:top + h, left:left + w]).sum())
                mask[top:top + h, left:left + w] = True
            if count == self.num_masked:
                return mask
        warnings.warn(f"block masking found no union of blocks with exactly {self.num_masked} patches on the "
                      f"{self.grid_size} grid; completed with single patches (BEiT v2's correction)")
        return self.single_patch_correction(mask, uniform)

    def acceptable(self, new: int, remaining: int) -> bool:
        """A rectangle adding `new` patches either finishes, or leaves room for another block."""
        return new == remaining or 1 <= new <= remaining - self.min_num_patches

    def random_block(self, mask: np.ndarray, remaining: int, uniform):
        """BEiT's draw, up to RANDOM_ATTEMPTS times -> (top, left, h, w) or None."""
        gh, gw = self.grid_size
        upper = remaining if self.max_num_patches is None else min(remaining, self.max_num_patches)
        upper = max(upper, self.min_num_patches)
        log_lo = math.log(self.min_aspect)
        for _ in range(RANDOM_ATTEMPTS):
            area = self.min_num_patches + (upper - self.min_num_patches) * uniform()
            aspect = math.exp(log_lo + (-2 * log_lo) * uniform())
            h, w = int(math.sqrt(area * aspect) + 0.5), int(math.sqrt(area / aspect) + 0.5)
            top_u, left_u = uniform(), uniform()
            if (h, w) not in self.shape_set:
                continue
            top, left = int(top_u * (gh - h + 1)), int(left_u * (gw - w + 1))
            new = int((~mask[top:top + h, left:left + w]).sum())
            if self.acceptable(new, remaining):
                return top, left, h, w
        return None

    def searched_block(self, mask: np.ndarray, remaining: int, uniform):
        """Score every allowed rectangle at every position; draw one adding exactly `remaining`,
        else one that is acceptable -> (top, left, h, w) or None."""
        table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table
        exact, fallback = [], []
        for h, w in self.shapes:
            covered = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]
            new = h * w - covered  # (gh - h + 1, gw - w + 1)
            for top, left in zip(*np.nonzero(new == remaining)):
                exact.append((int(top), int(left), h, w))
            ok = (new >= 1) & (new <= remaining - self.min_num_patches)
            for top, left in zip(*np.nonzero(ok)):
                fallback.append((int(top), int(left), h, w))
        candidates = exact or fallback
        if not candidates:
            return None
        return candidates[min(int(uniform() * len(candidates)), len(candidates) - 1)]

    def single_patch_correction(self, mask: np.ndarray, uniform) -> np.ndarray:
        """Flip random patches until the count is exact (the reference behaviour)."""
        mask = mask.copy()
        while mask.sum() != self.num_masked:
            flip = ~mask if mask.sum() < self.num_masked else mask
            ys, xs = np.nonzero(flip)
            i = min(int(uniform() * len(ys)), len(ys) - 1)
            mask[ys[i], xs[i]] = ~mask[ys[i], xs[i]]
        return mask


def block_masking(n: int, grid_size, num_masked: int, min_num_patches: int = 16, max_num_patches: int | None = None,
                  min_aspect: float = 0.3, generator: torch.Generator | None = None, flat: bool = False,
                  style: str = "union") -> torch.Tensor:
    """(N, h, w) bool (or (N, L) with flat=True) block masks of exactly num_masked patches each;
    see `BlockMasking`."""
    return BlockMasking(grid_size, num_masked, min_num_patches, max_num_patches, min_aspect, style)(n, generator, flat)
