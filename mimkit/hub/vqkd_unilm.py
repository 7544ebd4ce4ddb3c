"""microsoft/unilm BEiT v2 VQ-KD checkpoints -> mimkit VQKD.

mimkit's VQKD keeps unilm's module names (encoder, encode_task_layer, quantize.embedding.weight,
decoder, decode_task_layer; encoder/decoder = patch_embed.proj, cls_token, pos_embed, blocks.N.*),
so conversion is a few renames:
- BEiT attention has no k bias: `attn.q_bias` and `attn.v_bias` become the fused
  `attn.qkv.bias` = [q_bias, 0, v_bias];
- unilm's final LayerNorm of the patch tokens is `fc_norm` (its `norm` is an Identity with mean
  pooling); mimkit calls it `norm` (a checkpoint with a real `norm` instead maps directly);
- the tensors of unilm's training only are set aside: the EMA statistics
  `quantize.embedding.{cluster_size, embed_avg, initted}`, `quantize.cluster_size`, and the
  frozen teacher `teacher_model.*` / `scaling_layer.*`.
The architecture is read back from the weights, except the numbers of heads (not in the weights:
head width 64 assumed, as in ViT-B / ViT-L; pass num_heads / decoder_num_heads otherwise).
unilm pre-processes [0, 1] images to [-1, 1] exactly as mimkit's VQKD does, so codes match.

    model, report = vqkd_from_unilm("vqkd_encoder_base_decoder_3x768x12_clip-d5036aa7.pth")
    codes = model.encode(images)       # (N, 14, 14)
"""
import math
import re

import torch

from ..errors import CheckpointError
from ..tokenizers.vqkd import VQKD, VQKDConfig
from ..files.state_dicts import as_state_dict, count_numbered
from .report import LoadReport, load_converted, report_converted

TRAINING_ONLY = (r"^quantize\.embedding\.(cluster_size|embed_avg|initted)$", r"^quantize\.cluster_size$",
                 r"^teacher_model\.", r"^scaling_layer\.", r"^loss\.")
# mimkit's quantizer counters: not in unilm files, filled in on load
BOOKKEEPING = ("quantize.initialized", "quantize.steps", "quantize.last_hit", "quantize.last_reset")


def unilm_to_mimkit(sd: dict) -> tuple[dict, list[str]]:
    """unilm VQ-KD keys -> (mimkit keys, the training-only keys set aside)."""
    out, dropped = {}, []
    for key, value in sd.items():
        if any(re.search(p, key) for p in TRAINING_ONLY):
            dropped.append(key)
            continue
        m = re.match(r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$", key)
        if m:
            if m.group(3) == "q_bias":  # build the fused bias once, from the q / v pair
                prefix = key[: -len("q_bias")]
                v_bias = sd.get(prefix + "v_bias")
                if v_bias is None:
                    raise CheckpointError(f"{key} has no matching {prefix}v_bias")
                out[prefix + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
            continue
        m = re.match(r"^(encoder|decoder)\.fc_norm\.(weight|bias)$", key)
        out[f"{m.group(1)}.norm.{m.group(2)}" if m else key] = value
    return out, dropped


def vqkd_config_from_unilm(state_dict_or_path, **overrides) -> VQKDConfig:
    """The VQKDConfig whose shapes match a unilm VQ-KD state dict; `overrides` set other fields."""
    sd, source = as_state_dict(state_dict_or_path)
    required = ("encoder.patch_embed.proj.weight", "encoder.pos_embed", "decoder.patch_embed.proj.weight",
                "quantize.embedding.weight", "decode_task_layer.2.weight")
    absent = [k for k in required if k not in sd]
    if absent:
        raise CheckpointError(f"{source} is not a unilm BEiT v2 VQ-KD checkpoint: no {absent[0]} "
                              f"(first keys: {list(sd)[:5]})")
    proj, dec_proj = sd["encoder.patch_embed.proj.weight"], sd["decoder.patch_embed.proj.weight"]
    dim, dec_dim, patch = proj.shape[0], dec_proj.shape[0], proj.shape[-1]
    side = math.isqrt(sd["encoder.pos_embed"].shape[1] - 1)
    fields = dict(img_size=side * patch, patch_size=patch, in_chans=proj.shape[1], embed_dim=dim,
                  depth=count_numbered(sd, r"^encoder\.blocks\.(\d+)\."), num_heads=max(dim // 64, 1),
                  decoder_embed_dim=dec_dim, decoder_depth=count_numbered(sd, r"^decoder\.blocks\.(\d+)\."),
                  decoder_num_heads=max(dec_dim // 64, 1), mlp_ratio=sd["encoder.blocks.0.mlp.fc1.weight"].shape[0] / dim,
                  learned_pos_embed=True, codebook_size=sd["quantize.embedding.weight"].shape[0],
                  code_dim=sd["quantize.embedding.weight"].shape[1], kmeans_init=False,
                  teacher_dim=sd["decode_task_layer.2.weight"].shape[0])
    fields.update(overrides)
    return VQKDConfig(**fields)


def load_unilm_vqkd(model: VQKD, state_dict_or_path, *, strict: bool = True) -> LoadReport:
    """Copy a unilm VQ-KD state dict (or file: .pth/.safetensors) into `model`; returns the report.
    Every mimkit weight must be present with its shape (else CheckpointError naming the key);
    strict=True also refuses checkpoint keys that are neither mapped nor known training-only ones."""
    sd, source = as_state_dict(state_dict_or_path)
    mapped, dropped = unilm_to_mimkit(sd)
    own = model.state_dict()
    report = report_converted(mapped, own, source, "build it with vqkd_config_from_unilm", not_expected=BOOKKEEPING)
    if dropped:
        report.notes.append(f"{len(dropped)} unilm training-only tensors set aside (EMA statistics, teacher)")
    load_converted(model, mapped, report, source, strict)
    with torch.no_grad():
        model.quantize.initialized.fill_(True)  # pretrained codes: no k-means init on top
    return report


def vqkd_from_unilm(state_dict_or_path, *, strict: bool = True, **config_overrides) -> tuple[VQKD, LoadReport]:
    """Build the VQKD a unilm checkpoint describes and load it: (model in eval mode, report)."""
    sd, _ = as_state_dict(state_dict_or_path)
    model = VQKD(vqkd_config_from_unilm(sd, **config_overrides))
    report = load_unilm_vqkd(model, sd, strict=strict)
    return model.eval(), report
