"""transformers ViTMAE <-> mimkit MAE: state-dict key converters and config mapping.

transformers has stored ViTMAE under two key schemes (keys of ViTMAEForPreTraining; a bare
ViTMAEModel has the same encoder keys without the leading 'vit.'):

  mimkit (= official MAE)    v5 (transformers >= 5)                 v4 (transformers 4.x)
  cls_token                  vit.embeddings.cls_token               (same)
  pos_embed                  vit.embeddings.position_embeddings     (same)
  patch_embed.proj.*         vit.embeddings.patch_embeddings.projection.*   (same)
  blocks.i.                  vit.layers.i.                          vit.encoder.layer.i.
    norm1 / norm2              layernorm_before / layernorm_after   (same)
    attn.qkv (fused q;k;v)     attention.{q,k,v}_proj               attention.attention.{query,key,value}
    attn.proj                  attention.o_proj                     attention.output.dense
    mlp.fc1 / mlp.fc2          mlp.fc1 / mlp.fc2                    intermediate.dense / output.dense
  norm.*                     vit.layernorm.*                        (same)
  decoder_embed, mask_token, decoder_pos_embed, decoder_norm, decoder_pred
                             decoder.<same name>                    (same)
  decoder_blocks.i.          decoder.decoder_layers.i.<layer keys of the scheme>

The fused qkv weight (3D, D) is q, k and v stacked along dim 0, in that order. Both sides keep
the fixed sin-cos position tables as (non-trainable) parameters; they are copied like any weight.
Importing detects the scheme from the keys.
"""
import json
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..methods.mae import MAEConfig
from ..methods.pixel_statistics import IMAGENET_MEAN, IMAGENET_STD
from ..nn import to_pair

SCHEMES = ("v5", "v4")
ENCODER_LAYERS = {"v5": "vit.layers.", "v4": "vit.encoder.layer."}
DECODER_LAYERS = "decoder.decoder_layers."
# transformers 5.x writes the v4 layout on disk (save_pretrained), but with the decoder's layers
# under this prefix: files saved by it are read as v4 with this alias
SAVED_DECODER_LAYERS = "decoder.decoder_encoder.layer."
QKV = {"v5": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
       "v4": ("attention.attention.query", "attention.attention.key", "attention.attention.value")}
LAYER_PARTS = {  # transformers layer module -> mimkit Block module
    "v5": {"attention.o_proj": "attn.proj", "layernorm_before": "norm1", "layernorm_after": "norm2",
           "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"},
    "v4": {"attention.output.dense": "attn.proj", "layernorm_before": "norm1", "layernorm_after": "norm2",
           "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"},
}
TOP_LEVEL = {  # transformers name (prefix of a key) -> mimkit name; the same in both schemes
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection": "patch_embed.proj",
    "vit.layernorm": "norm",
    "decoder.decoder_embed": "decoder_embed",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
    "decoder.decoder_norm": "decoder_norm",
    "decoder.decoder_pred": "decoder_pred",
}
BARE_ENCODER = ("embeddings.", "layers.", "encoder.layer.", "layernorm.")  # ViTMAEModel keys lack 'vit.'


# ----------------------------------------------------------- scheme detection
def detect_vitmae_scheme(hf_state_dict) -> str:
    """'v5' or 'v4' from the key names (v5 when no layer key tells them apart)."""
    keys = list(hf_state_dict)
    v4 = any(".attention.attention." in k or "encoder.layer." in k or ".intermediate.dense." in k for k in keys)
    v5 = any(re.search(r"(^|\.)layers\.\d+\.", k) or ".q_proj." in k or ".o_proj." in k for k in keys)
    if v4 and v5:
        raise CheckpointError("the state dict mixes transformers v4 keys (encoder.layer / attention.attention) "
                              "with v5 keys (layers / q_proj); convert one scheme at a time")
    return "v4" if v4 else "v5"


# ------------------------------------------------------------ HF -> mimkit
def vitmae_to_mimkit(hf_state_dict, scheme: str | None = None, *, strict: bool = True) -> dict[str, torch.Tensor]:
    """Keys of a transformers ViTMAEForPreTraining (or ViTMAEModel) state dict -> mimkit MAE keys.

    scheme: 'v5', 'v4' or None to detect it. Keys that belong to neither scheme raise
    CheckpointError (strict=True) or pass through unchanged (strict=False), so that
    `load_official_mae` lists them as unexpected.
    """
    scheme = scheme or detect_vitmae_scheme(hf_state_dict)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    out, qkv, unknown = {}, {}, []
    for key, value in hf_state_dict.items():
        name = "vit." + key if key.startswith(BARE_ENCODER) else key
        mapped = _import_key(name, scheme)
        if mapped is None:
            unknown.append(key)
            out[key] = value
        elif isinstance(mapped, tuple):  # (mimkit qkv key, 0/1/2 for q/k/v)
            qkv.setdefault(mapped[0], [None, None, None])[mapped[1]] = value
        else:
            out[mapped] = value
    if unknown and strict:
        detected = detect_vitmae_scheme(hf_state_dict)
        hint = f"; the file has the {detected} layout: use the vitmae-{detected} converter" if detected != scheme else ""
        raise CheckpointError(f"{len(unknown)} key(s) are not transformers ViTMAE ({scheme}) keys: {unknown[:8]}; "
                              f"pass strict=False to keep them unchanged{hint}")
    for key, parts in qkv.items():
        if any(p is None for p in parts):
            names = [n for n, p in zip("qkv", parts) if p is None]
            raise CheckpointError(f"cannot build {key!r}: the {'/'.join(names)} projection(s) are missing")
        out[key] = torch.cat(parts, dim=0)
    return out


def _import_key(name: str, scheme: str):
    """One transformers key -> a mimkit key, (qkv key, index), or None when unknown."""
    for prefix, block_prefix in ((ENCODER_LAYERS[scheme], "blocks."), (DECODER_LAYERS, "decoder_blocks."),
                                 (SAVED_DECODER_LAYERS, "decoder_blocks.")):
        if name.startswith(prefix):
            index, _, rest = name[len(prefix):].partition(".")
            if not index.isdigit():
                return None
            module, _, leaf = rest.rpartition(".")
            if module in QKV[scheme]:
                return f"{block_prefix}{index}.attn.qkv.{leaf}", QKV[scheme].index(module)
            if module in LAYER_PARTS[scheme]:
                return f"{block_prefix}{index}.{LAYER_PARTS[scheme][module]}.{leaf}"
            return None
    for hf, ours in TOP_LEVEL.items():
        if name == hf:
            return ours
        if name.startswith(hf + "."):
            return ours + name[len(hf):]
    return None


# ------------------------------------------------------------ mimkit -> HF
def mimkit_to_vitmae(state_dict, scheme: str = "v5") -> dict[str, torch.Tensor]:
    """mimkit MAE keys -> transformers ViTMAEForPreTraining keys of `scheme` ('v5' or 'v4').

    The fused qkv is split into three projections (fresh tensors, so the result can be saved as
    safetensors). A key mimkit's MAE does not define raises CheckpointError.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    to_hf = {ours: hf for hf, ours in TOP_LEVEL.items()}
    to_layer = {ours: hf for hf, ours in LAYER_PARTS[scheme].items()}
    out, unknown = {}, []
    for key, value in state_dict.items():
        m = re.match(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            stack, index, module, leaf = m.groups()
            prefix = (ENCODER_LAYERS[scheme] if stack == "blocks" else DECODER_LAYERS) + index + "."
            if module == "attn.qkv":
                for part, chunk in zip(QKV[scheme], value.chunk(3, dim=0)):
                    out[f"{prefix}{part}.{leaf}"] = chunk.clone()
            elif module in to_layer:
                out[f"{prefix}{to_layer[module]}.{leaf}"] = value
            else:
                unknown.append(key)
            continue
        head, dot, leaf = key.rpartition(".")
        if key in to_hf:
            out[to_hf[key]] = value
        elif dot and head in to_hf:
            out[f"{to_hf[head]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{len(unknown)} key(s) have no transformers ViTMAE counterpart: {unknown[:8]}")
    return out


# --------------------------------------------------------------- configs
def mae_config_to_vitmae(config: MAEConfig, **overrides):
    """MAEConfig -> transformers.ViTMAEConfig. pixel_mean / pixel_std belong to the image processor
    and drop_path has no ViTMAE field: neither is carried over. `overrides` go to ViTMAEConfig
    (e.g. attn_implementation='eager')."""
    from transformers import ViTMAEConfig

    c = config
    h, w = to_pair(c.img_size)
    fields = dict(
        hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
        intermediate_size=int(c.embed_dim * c.mlp_ratio), hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=c.norm_eps,
        image_size=h if h == w else [h, w], patch_size=c.patch_size, num_channels=c.in_chans, qkv_bias=True,
        decoder_hidden_size=c.decoder_embed_dim, decoder_num_hidden_layers=c.decoder_depth,
        decoder_num_attention_heads=c.decoder_num_heads,
        decoder_intermediate_size=int(c.decoder_embed_dim * c.mlp_ratio),
        mask_ratio=c.mask_ratio, norm_pix_loss=c.norm_pix_loss,
    )
    fields.update(overrides)
    return ViTMAEConfig(**fields)


SETTINGS = ("img_size", "num_heads", "decoder_num_heads", "norm_eps", "mask_ratio", "norm_pix_loss")


def settings_beside(path) -> dict:
    """The MAEConfig fields the weights do not record (heads, eps, mask ratio, norm_pix_loss, image
    size), read from a transformers ViTMAE config.json in the folder of the weights file `path`;
    {} when there is none (the converter then guesses the heads, with a warning)."""
    file = Path(path).parent / "config.json"
    if not file.is_file():
        return {}
    try:
        spec = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {file}: {err}") from None
    if not isinstance(spec, dict) or spec.get("model_type") != "vit_mae":
        return {}
    config = vitmae_config_to_mae(spec)
    return {name: getattr(config, name) for name in SETTINGS}


def vitmae_config_to_mae(hf_config, **overrides) -> MAEConfig:
    """transformers.ViTMAEConfig (or its config.json as a dict) -> MAEConfig.

    transformers models take already-normalised pixels; mimkit's MAE normalises [0, 1] images
    itself with pixel_mean / pixel_std, which default to ImageNet's for 3 channels (the
    facebook/vit-mae-* processors' values) and to the identity otherwise; pass pixel_mean=(0,)*C,
    pixel_std=(1,)*C to feed normalised pixels.
    Raises ConfigError for what mimkit's MAE cannot express (another activation, no qkv bias,
    different encoder and decoder MLP ratios).
    """
    get = hf_config.get if isinstance(hf_config, dict) else (lambda k, d=None: getattr(hf_config, k, d))
    hidden, dec_hidden = get("hidden_size", 768), get("decoder_hidden_size", 512)
    ratio = get("intermediate_size", 3072) / hidden
    dec_ratio = get("decoder_intermediate_size", 2048) / dec_hidden
    if abs(ratio - dec_ratio) > 1e-9:
        raise ConfigError(f"ViTMAE intermediate_size/hidden_size = {ratio} but decoder_intermediate_size/"
                          f"decoder_hidden_size = {dec_ratio}; mimkit's MAEConfig has one mlp_ratio for both")
    if get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"ViTMAE hidden_act={get('hidden_act')!r}: mimkit's blocks use exact GELU ('gelu') only")
    if not get("qkv_bias", True):
        raise ConfigError("ViTMAE qkv_bias=False: mimkit's MAE blocks always have a qkv bias")
    patch = get("patch_size", 16)
    if not isinstance(patch, int):
        if patch[0] != patch[1]:
            raise ConfigError(f"ViTMAE patch_size={list(patch)}: MAEConfig.patch_size is one int")
        patch = int(patch[0])
    image = get("image_size", 224)
    image = image if isinstance(image, int) else (int(image[0]), int(image[1]))
    fields = dict(
        img_size=image, patch_size=patch, in_chans=get("num_channels", 3), embed_dim=hidden,
        depth=get("num_hidden_layers", 12), num_heads=get("num_attention_heads", 12),
        decoder_embed_dim=dec_hidden, decoder_depth=get("decoder_num_hidden_layers", 8),
        decoder_num_heads=get("decoder_num_attention_heads", 16), mlp_ratio=ratio,
        norm_eps=get("layer_norm_eps", 1e-12), mask_ratio=get("mask_ratio", 0.75),
        norm_pix_loss=bool(get("norm_pix_loss", False)),
    )
    if fields["in_chans"] == 3:
        fields.update(pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD)
    else:  # no standard statistics: feed images already normalised
        fields.update(pixel_mean=(0.0,), pixel_std=(1.0,))
    fields.update(overrides)
    config = MAEConfig(**fields)
    config.validate()
    return config
