"""mimkit BEiTv2 encoder <-> timm `Beit` state dicts (timm/models/beit.py, the
`beitv2_base_patch16_224` layout: use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=1e-5).

timm's Beit keys (huggingface/pytorch-image-models timm/models/beit.py; D = embed_dim, C = in_chans,
p = patch, H = heads, M = int(mlp_ratio * D), L = Wh * Ww patches, T = (2Wh - 1)(2Ww - 1) + 3):
  cls_token (1, 1, D); pos_embed (1, 1 + L, D) only with use_abs_pos_emb (None in the beitv2 configs);
  patch_embed.proj.{weight (D, C, p, p), bias (D)};
  blocks.i.norm1.{weight, bias} (D); blocks.i.attn.qkv.weight (3D, D) (no qkv bias: q;k;v rows);
  blocks.i.attn.q_bias (D), blocks.i.attn.v_bias (D) (k_bias is a zero non-persistent buffer);
  blocks.i.attn.relative_position_bias_table (T, H) and the buffer blocks.i.attn.relative_position_index
  (1 + L, 1 + L) int64, per block with use_rel_pos_bias=True (what beitv2_* use); the shared
  rel_pos_bias.{relative_position_bias_table, relative_position_index} only with
  use_shared_rel_pos_bias=True (default False); blocks.i.attn.proj.{weight (D, D), bias (D)};
  blocks.i.norm2.{weight, bias} (D); blocks.i.mlp.fc1.{weight (M, D), bias (M)},
  blocks.i.mlp.fc2.{weight (D, M), bias (D)}; blocks.i.gamma_1 / gamma_2 (D) when init_values is set;
  global_pool="avg" (the default, = use_mean_pooling): `norm` is Identity and fc_norm.{weight, bias}
  (D) norms the mean patch token; global_pool="token": norm.{weight, bias} (D), fc_norm is Identity;
  head.{weight (classes, D), bias} unless num_classes=0. LayerNorm eps is 1e-6 (timm.layers.LayerNorm).
timm's relative_position_index is BEiT's (cls -> token row T - 3, token -> cls T - 2, cls -> cls
T - 1), the same as mimkit.nn.relative_position_index. timm's checkpoint_filter_fn drops every
*relative_position_index and resizes each *relative_position_bias_table to its own module's window;
it does not copy a shared table into the blocks (unilm's fine-tuning code does that), so the export
writes mimkit's one shared table into every block, i.e. the beitv2_* layout.

Export: `timm.create_model("beitv2_base_patch16_224", num_classes=0, global_pool="token")` (set
img_size / patch_size / embed_dim / depth / num_heads / in_chans to the config; init_values=None when
layer_scale is 0, use_abs_pos_emb=True when abs_pos_embed) loads it with strict=True, and its
forward_head(forward_features(x), pre_logits=True) is mimkit's features(images, "cls") for
x = model.normalize(images) (timm's input is already normalised; mimkit's pixel_mean / pixel_std
are not weights). Dropped: mask_token, lm_head (the MIM head), cls_pt_layers (the aggregation
head) and tokenizer.* (the frozen VQ-KD). global_pool="avg" writes the final norm as fc_norm: a
fine-tuning start, not the same features (timm's avg is fc_norm(mean of un-normed patch tokens)).
Import: the reverse; per-block tables must all be equal (mimkit's BEiTv2 has one shared table).
"""
import torch

from ..errors import CheckpointError, ConfigError
from .beitv2_unilm import RENAMES, copy_checked, rename
from ..files.state_dicts import as_state_dict, count_numbered
from .report import LoadReport

# timm names layer scale as unilm does: (timm / unilm suffix, mimkit suffix)
TO_TIMM = tuple((new, old) for old, new in RENAMES)
TABLE, INDEX = "relative_position_bias_table", "relative_position_index"
FINAL_NORM = {"token": "norm.", "avg": "fc_norm."}


def is_encoder_key(key: str) -> bool:
    """mimkit BEiTv2 keys that a timm Beit has a place for (no MIM / aggregation head, tokenizer, mask token)."""
    return key in ("cls_token", "pos_embed") or key.startswith(("patch_embed.", "rel_pos_bias.", "blocks.", "norm."))


def beitv2_to_timm_beit(sd: dict, global_pool: str = "token") -> dict:
    """mimkit BEiTv2 state dict -> timm Beit state dict (num_classes=0, per-block relative
    position bias): the shared table (T, H) and index (1 + L, 1 + L) are copied into every block."""
    if global_pool not in FINAL_NORM:
        raise ConfigError(f"global_pool must be one of {list(FINAL_NORM)} (timm's Beit pooling), got {global_pool!r}")
    shared = {name: sd.get(f"rel_pos_bias.{name}") for name in (TABLE, INDEX)}
    if "patch_embed.proj.weight" not in sd or shared[TABLE] is None or shared[INDEX] is None:
        raise CheckpointError("not a BEiTv2 state dict: no patch_embed.proj.weight / rel_pos_bias.* keys")
    out = {}
    for key, value in sd.items():
        if not is_encoder_key(key) or key.startswith("rel_pos_bias."):
            continue
        if key.startswith("norm."):
            key = FINAL_NORM[global_pool] + key[len("norm."):]
        out[rename(key, TO_TIMM)] = value
    for i in range(count_numbered(sd, r"^blocks\.(\d+)\.")):
        for name, value in shared.items():
            out[f"blocks.{i}.attn.{name}"] = value.clone()  # own storage: safetensors refuses shared tensors
    return out


def timm_beit_to_beitv2(timm_sd: dict) -> dict:
    """timm Beit state dict -> mimkit BEiTv2 encoder keys (the model's other keys are not in it).
    Per-block tables become the shared rel_pos_bias.* (CheckpointError naming the first block whose
    table differs from block 0's); fc_norm (global_pool="avg") becomes norm; head.* is dropped."""
    out, tables, indices = {}, {}, {}
    for key, value in timm_sd.items():
        if key.startswith("head."):
            continue
        parts = key.split(".")
        if key.startswith("blocks.") and parts[-1] in (TABLE, INDEX):
            (tables if parts[-1] == TABLE else indices)[int(parts[1])] = (key, value)
            continue
        if key.startswith("fc_norm."):
            key = "norm." + key[len("fc_norm."):]
        out[rename(key, RENAMES)] = value
    for per_block, name in ((tables, TABLE), (indices, INDEX)):
        if not per_block:
            continue
        first_key, first = per_block[min(per_block)]
        for key, value in per_block.values():
            if not torch.equal(value, first):
                raise CheckpointError(f"{key} differs from {first_key}: mimkit's BEiTv2 has one relative position "
                                      f"table shared by all blocks, so only a timm Beit whose blocks hold the "
                                      f"same table (as exported by beitv2_to_timm_beit) can be imported")
        out[f"rel_pos_bias.{name}"] = first
    return out


def load_timm_beit(model, state_dict_or_path, *, strict: bool = False) -> LoadReport:
    """Copy a timm Beit state dict (or a .pth / .safetensors file of one) into the encoder of the
    mimkit BEiTv2 `model`; mask_token, lm_head, cls_pt_layers and the tokenizer stay as they are.

    missing / unexpected are counted over the encoder keys (head.* of a timm classifier is
    unexpected). A shape mismatch or a relative_position_index of another patch grid raises
    CheckpointError naming the key, and nothing is copied; strict=True also raises when a key is
    missing or unexpected."""
    sd, source = as_state_dict(state_dict_or_path)
    converted = timm_beit_to_beitv2(sd)
    own = {k: v for k, v in model.state_dict().items() if is_encoder_key(k)}
    report = copy_checked(model, converted, own, source, strict=strict,
                          extra_unexpected=tuple(k for k in sd if k.startswith("head.")),
                          hint="check model.embed_dim, depth, num_heads, mlp_ratio, patch_size, img_size and in_chans")
    report.notes.append("mask_token, lm_head, cls_pt_layers and tokenizer.* are not in a timm Beit: kept as in the model")
    if any(k.startswith("fc_norm.") for k in sd):
        report.notes.append("fc_norm (timm global_pool='avg') was loaded as the final norm")
    return report
