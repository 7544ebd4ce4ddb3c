"""google-research/maskgit's released tokenizer (flax, vqgan_tokenizer.py VQVAE; e.g.
tokenizer_imagenet256_checkpoint) -> mimkit MaskGITVQGAN.

Flax names modules by type and call order inside each compact module, so the tree (under "params/",
flattened with "/") holds, for L = len(channel_mult) levels and n = num_res_blocks:
    encoder/Conv_0                 conv_in (no bias)
    encoder/ResBlock_k             k < L*n: level k // n, block k % n; then the n middle blocks
    encoder/GroupNorm_0, Conv_1    norm_out, conv_out (1x1, to the code space)
    decoder/Conv_0                 conv_in
    decoder/ResBlock_k             k < n: the middle; then levels L-1 .. 0, n blocks each
    decoder/Conv_m                 m = 1 .. L-1: the upsampling conv of level L - m; Conv_L: conv_out
    decoder/GroupNorm_0            norm_out
    quantizer/codebook             (codebook_size, code_dim)
    ResBlock: GroupNorm_0, Conv_0, GroupNorm_1, Conv_1 (norm1, conv1, norm2, conv2), Conv_2 = the
    1x1 shortcut when the width changes (nin_shortcut)
Conv kernels are (kh, kw, in, out): torch weights are permuted to (out, in, kh, kw); GroupNorm
scale -> weight. The result has MAGE's PyTorch key names, loaded by mimkit.hub.mage_vqgan (strict:
every key placed, every shape equal). The image size is not in the weights: 256 unless given, or
derived from the token count of the transformer it serves.
"""
import math
import re

from ..errors import CheckpointError
from .flax_msgpack import strip_root

RESBLOCK = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "GroupNorm_1": "norm2", "Conv_1": "conv2",
            "Conv_2": "nin_shortcut"}
NUMBERED = re.compile(r"(encoder|decoder)/(ResBlock|Conv)_(\d+)/")


def _leaf(prefix: str, leaf: str, value):
    """(mimkit key, tensor) of one Conv / GroupNorm leaf."""
    if leaf == "kernel":
        return f"{prefix}.weight", value.permute(3, 2, 0, 1).contiguous()
    return f"{prefix}.{'weight' if leaf == 'scale' else leaf}", value


def _count(sd: dict, part: str, kind: str) -> int:
    return len({m.group(3) for k in sd for m in [NUMBERED.match(k)] if m and m.group(1) == part and m.group(2) == kind})


def maskgit_vqgan_flax_to_mimkit(sd: dict) -> dict:
    """Flattened flax VQVAE tree {"params/encoder/Conv_0/kernel": tensor, ...} -> MaskGITVQGAN state
    dict (MAGE's key names). Keys with no place keep their flax names (strict loading refuses them)."""
    sd = strip_root(sd)
    levels = _count(sd, "decoder", "Conv") - 1  # conv_in, L - 1 upsampling convs, conv_out
    encoder_blocks = _count(sd, "encoder", "ResBlock")
    if levels < 1 or encoder_blocks % (levels + 1):
        raise CheckpointError(f"not google-research/maskgit's tokenizer (VQVAE) tree: {levels + 1} decoder/Conv_k "
                              f"and {encoder_blocks} encoder/ResBlock_k do not make a VQVAE (first keys: "
                              f"{sorted(sd)[:3]}); give tokenizer_imagenet256_checkpoint")
    n = encoder_blocks // (levels + 1)

    def module(part: str, name: str) -> str | None:
        kind, _, index = name.rpartition("_")
        k = int(index) if index.isdigit() else -1
        if part == "encoder":
            if kind == "ResBlock":
                if k < levels * n:
                    return f"encoder.down.{k // n}.block.{k % n}"
                return f"encoder.mid.block_{k - levels * n + 1}"
            return {"Conv_0": "encoder.conv_in", "Conv_1": "encoder.conv_out",
                    "GroupNorm_0": "encoder.norm_out"}.get(name)
        if kind == "ResBlock":
            if k < n:
                return f"decoder.mid.block_{k + 1}"
            return f"decoder.up.{levels - 1 - (k - n) // n}.block.{(k - n) % n}"
        if kind == "Conv":
            if k == 0:
                return "decoder.conv_in"
            return "decoder.conv_out" if k == levels else f"decoder.up.{levels - k}.upsample.conv"
        return {"GroupNorm_0": "decoder.norm_out"}.get(name)

    out = {}
    for name, value in sd.items():
        parts = name.split("/")
        if name == "quantizer/codebook":
            out["quantize.embedding.weight"] = value
            continue
        target = module(parts[0], parts[1]) if len(parts) >= 3 and parts[0] in ("encoder", "decoder") else None
        if target is not None and parts[1].startswith("ResBlock") and len(parts) == 4 and parts[2] in RESBLOCK:
            key, tensor = _leaf(f"{target}.{RESBLOCK[parts[2]]}", parts[3], value)
        elif target is not None and len(parts) == 3:
            key, tensor = _leaf(target, parts[2], value)
        else:
            key, tensor = name, value
        out[key] = tensor
    return out


def maskgit_vqgan_from_flax(sd: dict, img_size: int | None = None, num_tokens: int | None = None, **overrides):
    """Flattened flax VQVAE tree -> (MaskGITVQGAN in eval mode, LoadReport). img_size: the images' side
    (256 by default, the released ImageNet 256 tokenizer); num_tokens: instead, the tokens per image
    of the transformer it serves (img_size = sqrt(num_tokens) x the downsampling factor)."""
    from .mage_vqgan import maskgit_vqgan_from_mage

    converted = maskgit_vqgan_flax_to_mimkit(sd)
    if img_size is None:
        img_size = 256
        if num_tokens is not None:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise CheckpointError(f"{num_tokens} tokens is not a square grid: give the tokenizer's img_size")
            img_size = side * 2 ** (_count(strip_root(sd), "decoder", "Conv") - 2)
    model, report = maskgit_vqgan_from_mage(converted, img_size, **overrides)
    return model, report
