"""Generation, inpainting, outpainting and class-conditional editing with a masked token model:
each builds a token canvas (known tokens from the tokenizer, mask_token_id where unknown), fills
it with a MaskedTokenSampler, decodes it, and pastes the known pixels back.

All take `generator` (torch.Generator on the model's device, or None = torch's global RNG) and
return images (N, C, H, W) in [0, 1] on the model's device. The model interface is described in
mimkit/generation/token_model.py.
"""
import contextlib
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .blur import gaussian_blur
from .regions import (box_mask, grow_tokens, outpaint_amount, outpaint_region, outpaint_shift, pixel_mask,
                      pixels_of_tokens, token_factor, tokens_of_pixels)
from .sampler import MaskedTokenSampler
from ..nn.device import model_device
from .token_model import check_token_model, resolve_labels

Labels = int | Sequence[int] | torch.Tensor | None


@contextlib.contextmanager
def inference(model):
    """Eval mode (restored afterwards) and no autograd for the duration of a pipeline."""
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)


def fill_tokens(model, canvas: torch.Tensor, labels: torch.Tensor | None, sampler: MaskedTokenSampler | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """canvas (N, h, w) int64 with mask_token_id at unknown tokens -> decoded images (N, C, H, W)."""
    sampler = sampler or MaskedTokenSampler()
    if sampler.guidance_scale > 0 and labels is None:
        raise ConfigError(f"guidance scale {sampler.guidance_scale} needs class labels (and a class-conditional "
                          f"model); give labels or set the guidance to 0")
    n, h, w = canvas.shape
    device = canvas.device
    labels = None if labels is None else labels.to(device)
    tokens = sampler.sample(model.token_logits, canvas.reshape(n, h * w), labels, generator,
                            mask_token_id=model.mask_token_id)
    return model.tokenizer.decode(tokens.reshape(n, h, w)).clamp(0, 1)


def check_images(model, images: torch.Tensor) -> tuple[int, int]:
    """(N, C, H, W) float images -> (H, W); ConfigError for another shape or a size off the grid."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ConfigError(f"images must be a float (N, C, H, W) tensor in [0, 1], got {tuple(images.shape)} "
                          f"{images.dtype}")
    token_factor(tuple(images.shape[-2:]), tuple(model.grid_size))
    return tuple(images.shape[-2:])


def encode(model, images: torch.Tensor) -> torch.Tensor:
    """images (N, C, H, W) in [0, 1] -> codes (N, h, w) int64 on the model's device."""
    return model.tokenizer.encode(images.to(model_device(model))).long()


def generate(model, n: int | None = None, labels: Labels = None, sampler: MaskedTokenSampler | None = None,
             generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Sample n images from an all-masked canvas -> (N, C, H, W) in [0, 1].

    labels: None (unconditional), one class for all, or one per sample (then n may be omitted);
    -1 = no label for that sample. batch_size: samples per sampler call (None = all at once); the
    results depend on it because the batches draw from `generator` one after another.
    """
    check_token_model(model)
    labels, n = resolve_labels(model, labels, n)
    device = model_device(model)
    h, w = model.grid_size
    batch_size = batch_size or n
    out = []
    with inference(model):
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            canvas = torch.full((rows, h, w), model.mask_token_id, dtype=torch.long, device=device)
            chunk = None if labels is None else labels[start:start + rows]
            out.append(fill_tokens(model, canvas, chunk, sampler, generator))
    return torch.cat(out)


def inpaint(model, images: torch.Tensor, mask: torch.Tensor, labels: Labels = None,
            sampler: MaskedTokenSampler | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the masked region of images (N, C, H, W) in [0, 1] -> (N, C, H, W).

    mask (N, H, W), (N, 1, H, W) or (H, W) bool, True = region to fill. A token is unknown when any
    of its pixels is masked; pixels outside the mask are the input's, exactly. The pixels under the
    mask are encoded as given, so blank them first if their content must not reach the tokens next
    to the region through the tokenizer's receptive field.
    """
    check_token_model(model)
    size = check_images(model, images)
    labels, n = resolve_labels(model, labels, images.shape[0])
    mask = pixel_mask(mask, n, size).to(images.device)
    with inference(model):
        codes = encode(model, images)
        unknown = tokens_of_pixels(mask, tuple(model.grid_size)).to(codes.device)
        generated = fill_tokens(model, codes.masked_fill(unknown, model.mask_token_id), labels, sampler, generator)
    return torch.where(mask[:, None].to(generated.device), generated, images.to(generated.device))


def outpaint(model, images: torch.Tensor, side: str, amount: float | int, labels: Labels = None,
             sampler: MaskedTokenSampler | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend images (N, C, H, W) on `side` (left, right, top, bottom) -> (N, C, H, W), the same size.

    The model's canvas has a fixed size, so the content moves by k tokens away from `side` (its far
    k-token strip is cropped) and the freed strip of k tokens on `side` is generated: with side
    "right", output[..., :W - k f] == images[..., k f:]. amount: a fraction in (0, 1) of the grid
    side or an integer number of tokens. The known tokens are the input's own codes, shifted.
    """
    check_token_model(model)
    check_images(model, images)
    labels, _ = resolve_labels(model, labels, images.shape[0])
    grid = tuple(model.grid_size)
    k = outpaint_amount(amount, side, grid)
    shifted, mask = outpaint_region(images, side, k, grid)
    dim, shift = outpaint_shift(side, k)
    with inference(model):
        codes = encode(model, images)
        unknown = tokens_of_pixels(mask, grid).to(codes.device)
        canvas = codes.roll(shift, dims=dim).masked_fill(unknown, model.mask_token_id)
        generated = fill_tokens(model, canvas, labels, sampler, generator)
    return torch.where(mask[:, None].to(generated.device), generated, shifted.to(generated.device))


def edit(model, images: torch.Tensor, box: Sequence[int], label: int | Sequence[int] | torch.Tensor,
         sampler: MaskedTokenSampler | None = None, generator: torch.Generator | None = None,
         sigma: float | None = None) -> torch.Tensor:
    """Regenerate the box (x0, y0, x1, y1) pixels (x1, y1 exclusive) of images (N, C, H, W) under
    class `label` (one for all or one per image) -> (N, C, H, W).

    The tokens touching the box, grown by one token on every side, are regenerated; the result is
    alpha * generated + (1 - alpha) * input with alpha the box mask blurred by a Gaussian of std
    `sigma` pixels (default half a token) and cut to the regenerated region, so pixels outside it
    are the input's exactly.
    """
    check_token_model(model)
    size = check_images(model, images)
    labels, n = resolve_labels(model, label, images.shape[0])
    factor = token_factor(size, tuple(model.grid_size))
    inside = box_mask(box, n, size)  # (N, H, W)
    region = grow_tokens(tokens_of_pixels(inside, tuple(model.grid_size)), by=1)  # (N, h, w)
    sigma = sigma if sigma is not None else max(factor) / 2
    alpha = gaussian_blur(inside[:, None].float(), sigma) * pixels_of_tokens(region, factor)[:, None]
    with inference(model):
        codes = encode(model, images)
        generated = fill_tokens(model, codes.masked_fill(region.to(codes.device), model.mask_token_id), labels,
                                sampler, generator)
    alpha = alpha.to(generated.device, generated.dtype)
    return alpha * generated + (1 - alpha) * images.to(generated.device)
