"""microsoft/unilm BEiT v2 pretraining checkpoints (modeling_pretrain.py's
VisionTransformerForMaskedImageModelingCLS) -> mimkit BEiTv2, and back.

mimkit's BEiTv2 keeps unilm's key names (cls_token, mask_token, patch_embed.proj.*,
rel_pos_bias.relative_position_bias_table / relative_position_index, blocks.N.norm1.*,
blocks.N.attn.qkv.weight, blocks.N.attn.q_bias / v_bias, blocks.N.attn.proj.*, blocks.N.norm2.*,
blocks.N.mlp.fc1/fc2.*, norm.*, lm_head.*, cls_pt_layers.N.*, pos_embed when absolute positions
are on) except layer scale: unilm's blocks.N.gamma_1 / gamma_2 are mimkit's blocks.N.ls1.gamma /
ls2.gamma. Checkpoints store the dict under 'model' (read with torch.load(weights_only=True)).
The VQ-KD tokenizer is not part of these files: the model's tokenizer.* keys are left alone.
"""

import torch

from ..errors import CheckpointError
from ..files.state_dicts import as_state_dict
from .report import LoadReport

# (unilm suffix, mimkit suffix) of every renamed key
RENAMES = ((".gamma_1", ".ls1.gamma"), (".gamma_2", ".ls2.gamma"))
TOKENIZER_PREFIX = "tokenizer."


def rename(key: str, pairs) -> str:
    for old, new in pairs:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def unilm_to_beitv2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """unilm BEiT v2 keys -> mimkit BEiTv2 keys (only layer scale is renamed)."""
    return {rename(k, RENAMES): v for k, v in state_dict.items()}


def beitv2_to_unilm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mimkit BEiTv2 keys -> unilm keys, without the tokenizer (unilm keeps it in its own file)."""
    back = tuple((new, old) for old, new in RENAMES)
    return {rename(k, back): v for k, v in state_dict.items() if not k.startswith(TOKENIZER_PREFIX)}


def load_unilm_beitv2(model, state_dict_or_path, *, strict: bool = False) -> LoadReport:
    """Copy a unilm BEiT v2 state dict (or a .pth / .safetensors file holding one, e.g. under
    'model') into the mimkit BEiTv2 `model`; returns what was loaded, missing and unexpected.

    The tokenizer.* keys are not expected in the file. A key on both sides with a different shape,
    or a relative_position_index of another patch grid, raises CheckpointError naming the key; then
    nothing is copied. strict=True also raises when a key is missing or unexpected.
    """
    sd, source = as_state_dict(state_dict_or_path)
    sd = unilm_to_beitv2(sd)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(TOKENIZER_PREFIX)}
    report = copy_checked(model, sd, own, source, strict=strict,
                          hint="check model.embed_dim, depth, patch_size, img_size and the tokenizer's "
                               "codebook_size (lm_head)")
    report.notes.append("tokenizer.* is not in unilm checkpoints: it comes from model.tokenizer_config / the VQ-KD run")
    return report


def copy_checked(model, converted: dict, own: dict, source: str, *, hint: str, strict: bool,
                 extra_unexpected: tuple = ()) -> LoadReport:
    """Copy the `converted` tensors whose keys are in `own` (the part of model.state_dict() the file
    may hold) into the BEiTv2 `model`, after checking them all: CheckpointError when no key is
    shared, a shape differs (then `hint`), a relative_position_index is of another patch grid or,
    with strict, a key is missing / unexpected. Nothing is copied when it raises."""
    common = [k for k in converted if k in own]
    if not common:
        raise CheckpointError(f"no key of {source} belongs to a BEiT v2 model (first keys: {list(converted)[:5]})")
    for key in common:
        if tuple(converted[key].shape) != tuple(own[key].shape):
            raise CheckpointError(f"shape mismatch for {key!r}: {source} has {list(converted[key].shape)}, the model "
                                  f"has {list(own[key].shape)}; {hint}")
        if key.endswith("relative_position_index") and not torch.equal(converted[key].long(), own[key]):
            raise CheckpointError(f"{key} of {source} indexes another patch grid than the model's "
                                  f"{tuple(model.grid_size)}; check model.img_size / model.patch_size")
    report = LoadReport(loaded=common, missing=[k for k in own if k not in converted],
                        unexpected=[k for k in converted if k not in own] + list(extra_unexpected))
    if strict:
        report.raise_if_incomplete(source)
    model.load_state_dict({k: converted[k] for k in common}, strict=False)
    return report
