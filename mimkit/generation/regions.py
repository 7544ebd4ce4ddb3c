"""Pixel regions and the token grid: which tokens an inpainting mask, an outpainting side or an
editing box makes unknown. A token covers an f_y x f_x block of pixels (f = image size / grid size)."""
from collections.abc import Sequence

import torch

from ..errors import ConfigError

SIDES = ("left", "right", "top", "bottom")


def token_factor(image_size: tuple[int, int], grid_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) pixels and (h, w) tokens -> (f_y, f_x) pixels per token; ConfigError if not a multiple."""
    (H, W), (h, w) = image_size, grid_size
    if H % h or W % w:
        raise ConfigError(f"images of {H}x{W} pixels do not tile the model's {h}x{w} token grid; "
                          f"resize them to a multiple of it")
    return H // h, W // w


def pixel_mask(mask: torch.Tensor, n: int, image_size: tuple[int, int]) -> torch.Tensor:
    """A user mask (N, H, W), (N, 1, H, W) or (H, W), True = to fill -> (N, H, W) bool."""
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim == 2:
        mask = mask.expand(n, *mask.shape)
    if tuple(mask.shape) != (n, *image_size):
        raise ConfigError(f"mask has shape {tuple(mask.shape)}; expected ({n}, {image_size[0]}, {image_size[1]}) "
                          f"or ({n}, 1, {image_size[0]}, {image_size[1]}) like the images")
    return mask.bool()


def tokens_of_pixels(mask: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool pixel mask -> (N, h, w) bool: a token is True if ANY of its pixels is."""
    n, H, W = mask.shape
    (h, w) = grid_size
    fy, fx = token_factor((H, W), grid_size)
    return mask.reshape(n, h, fy, w, fx).any(dim=4).any(dim=2)


def pixels_of_tokens(tokens: torch.Tensor, factor: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) bool token mask -> (N, h f_y, w f_x) bool: every pixel of a True token."""
    return tokens.repeat_interleave(factor[0], dim=1).repeat_interleave(factor[1], dim=2)


def check_box(box: Sequence[int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixels, x1/y1 exclusive -> the same as ints; ConfigError unless
    0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H."""
    H, W = image_size
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ConfigError(f"box must be four integers x0,y0,x1,y1, got {box!r}") from None
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ConfigError(f"box ({x0}, {y0}, {x1}, {y1}) is empty or outside the {W}x{H} image; "
                          f"need 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H} (x1, y1 exclusive)")
    return x0, y0, x1, y1


def box_mask(box: Sequence[int], n: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Box (x0, y0, x1, y1) -> (N, H, W) bool, True inside."""
    x0, y0, x1, y1 = check_box(box, image_size)
    mask = torch.zeros(n, *image_size, dtype=torch.bool)
    mask[:, y0:y1, x0:x1] = True
    return mask


def grow_tokens(tokens: torch.Tensor, by: int = 1) -> torch.Tensor:
    """(N, h, w) bool -> the same grown by `by` tokens in every direction (8-neighbourhood), clipped
    to the grid."""
    if by <= 0:
        return tokens
    k = 2 * by + 1
    grown = torch.nn.functional.max_pool2d(tokens[:, None].float(), k, stride=1, padding=by)
    return grown[:, 0] > 0


def outpaint_amount(amount: float | int, side: str, grid_size: tuple[int, int]) -> int:
    """Tokens to add on `side`: a float in (0, 1) is a fraction of the grid side (rounded, >= 1),
    an int is a number of tokens; it must leave at least one known token row/column."""
    if side not in SIDES:
        raise ConfigError(f"unknown side {side!r}; choose one of {', '.join(SIDES)}")
    length = grid_size[1] if side in ("left", "right") else grid_size[0]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ConfigError(f"amount must be a fraction in (0, 1) or a number of tokens, got {amount!r}")
    if isinstance(amount, float):
        if not 0 < amount < 1:
            raise ConfigError(f"amount {amount} as a fraction must be in (0, 1); give an integer for tokens")
        tokens = max(1, round(amount * length))
    else:
        tokens = amount
    if not 1 <= tokens <= length - 1:
        raise ConfigError(f"amount of {tokens} tokens on the {side} leaves no image: choose 1..{length - 1} tokens "
                          f"(the grid is {length} tokens {'wide' if side in ('left', 'right') else 'high'})")
    return tokens


def outpaint_shift(side: str, tokens: int) -> tuple[int, int]:
    """(dim of an (N, ..., h, w) tensor, signed shift in tokens) that moves the content away from `side`."""
    dim = -1 if side in ("left", "right") else -2
    return dim, (-tokens if side in ("right", "bottom") else tokens)


def outpaint_region(images: torch.Tensor, side: str, amount: float | int,
                    grid_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N, C, H, W) -> (shifted images (N, C, H, W), pixel mask (N, H, W) bool of the new strip).

    The output keeps the model's size: the content moves by k tokens away from `side` (its far
    k-token strip is cropped) and the freed k-token strip on `side` is the region to generate.
    The strip's pixels in the shifted images are the wrapped-around content; only the mask says
    they are unknown.
    """
    n, _, H, W = images.shape
    k = outpaint_amount(amount, side, grid_size)
    fy, fx = token_factor((H, W), grid_size)
    dim, shift = outpaint_shift(side, k)
    shifted = images.roll(shift * (fx if dim == -1 else fy), dims=dim)
    strip = torch.zeros(n, *grid_size, dtype=torch.bool)
    index = slice(None, k) if shift > 0 else slice(-k, None)
    if dim == -1:
        strip[:, :, index] = True
    else:
        strip[:, index, :] = True
    return shifted, pixels_of_tokens(strip, (fy, fx)).to(images.device)
