"""mimkit encoders <-> timm `vit_*` (VisionTransformer, class token, global_pool="token",
num_classes=0) state dicts.

timm's layout (timm/models/vision_transformer.py):
  cls_token (1, 1, D); pos_embed (1, 1 + L, D) (class position first);
  patch_embed.proj.{weight (D, C, p, p), bias (D)};
  blocks.i.norm1 / attn.qkv (3D, D: q;k;v) / attn.proj / norm2 / mlp.fc1 (H, D) / mlp.fc2 (D, H)
  (.weight and .bias each), with ls1.gamma / ls2.gamma when init_values is set; norm.{weight, bias}.
MAE keeps exactly these names for its encoder, so its export is the encoder subset (the decoder,
mask token and pixel statistics are left out) and the import is the reverse (a MAE built to the
same sizes keeps its decoder). The MAE features are timm's forward_features (cls + patches,
positions, blocks, final norm) and, with global_pool="token", mimkit's MAE.features (pool="cls").

MAGE's encoder reads VQ tokens, not pixels: its export has the blocks, norm, pos_embed, as
cls_token the "fake class" embedding row, and as norm_pre the LayerNorm MAGE applies to its
embedded input (embed.norm): a timm VisionTransformer(pre_norm=True, global_pool="avg",
fc_norm=False) run from after its patch embedding, over MAGE's token embeddings
(embed.tokens.weight[codes]), gives MAGE.encode's tokens and, pooled, MAGE.features. There is no
patch_embed (load it into timm with strict=False). tests/test_mae_official_reference.py checks
both exports against a timm forward written from timm/models/vision_transformer.py.
"""
from ..errors import CheckpointError


def _is_encoder_key(key: str) -> bool:
    return key in ("cls_token", "pos_embed") or key.startswith(("patch_embed.", "blocks.", "norm."))


def mae_to_timm_vit(sd: dict) -> dict:
    """mimkit (= official) MAE state dict -> timm vit_* state dict (num_classes=0)."""
    if "patch_embed.proj.weight" not in sd or "cls_token" not in sd:
        raise CheckpointError("not a MAE state dict: no patch_embed.proj.weight / cls_token")
    return {k: v for k, v in sd.items() if _is_encoder_key(k)}


def timm_vit_to_mae(timm_sd: dict, mae_sd: dict) -> dict:
    """timm vit_* weights over a MAE state dict of the same sizes (its decoder kept) -> MAE state
    dict. CheckpointError naming an encoder key that is missing or shaped differently; a timm
    classifier head (head.*, fc_norm.*) is dropped."""
    encoder = {k: v for k, v in mae_sd.items() if _is_encoder_key(k)}
    for key, value in encoder.items():
        if key not in timm_sd:
            raise CheckpointError(f"the timm state dict has no {key}")
        if tuple(timm_sd[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{key} is {tuple(timm_sd[key].shape)} in the timm state dict, "
                                  f"{tuple(value.shape)} in the MAE")
    extra = [k for k in timm_sd if k not in encoder and not k.startswith(("head.", "fc_norm."))]
    if extra:
        raise CheckpointError(f"timm keys with no place in a MAE encoder: {extra[:4]}")
    return {**mae_sd, **{k: timm_sd[k] for k in encoder}}


def mage_to_timm_vit(sd: dict) -> dict:
    """mimkit MAGE state dict -> timm vit_* names for its encoder, norm_pre included (a timm
    VisionTransformer with pre_norm=True; no patch_embed: see the module doc)."""
    if "embed.classes.weight" not in sd:
        raise CheckpointError("not a MAGE state dict: no embed.classes.weight")
    out = {k: v for k, v in sd.items() if k.startswith(("blocks.", "norm."))}
    out["cls_token"] = sd["embed.classes.weight"][-1:].unsqueeze(0)  # the null ("fake class") row
    out["pos_embed"] = sd["embed.pos_embed"]
    # MAGE normalises [class; tokens] + positions before the blocks: timm's norm_pre (pre_norm=True)
    out["norm_pre.weight"], out["norm_pre.bias"] = sd["embed.norm.weight"], sd["embed.norm.bias"]
    return out
