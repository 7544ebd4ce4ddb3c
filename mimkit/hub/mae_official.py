"""Official facebookresearch/mae checkpoints -> mimkit MAE.

mimkit's MAE keeps the official state-dict key names, so loading is a strict-by-default copy with
a clear account of what did not match: pretraining checkpoints (encoder + decoder) load with no
missing or unexpected key; encoder-only files (the released encoder weights, fine-tuned or
linear-probe checkpoints with head.* / fc_norm.*) load the encoder and the report names the rest.

The architecture can be read back from the weights (`mae_config_from_state_dict`), except the
number of attention heads, which changes no shape: it comes from the pickled training args
(`args.model`, e.g. 'mae_vit_large_patch16'), an explicit argument, or a guess.
"""
import dataclasses
import math
import re
import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..methods.mae import MAE, MAEConfig
from ..nn import to_pair
from ..files.state_dicts import Checkpoint, as_state_dict, read_checkpoint, strip_prefix
from .report import LoadReport

# Official encoders: name -> (embed_dim, depth, num_heads, patch_size). Decoders: 512-d, 16 heads.
OFFICIAL_ENCODERS = {
    "vit_base_patch16": (768, 12, 12, 16),
    "vit_large_patch16": (1024, 24, 16, 16),
    "vit_huge_patch14": (1280, 32, 16, 14),
}
OFFICIAL_DECODER_HEADS = {512: 16}

# Which config fields decide the shape of a key (first matching pattern wins).
SHAPE_FIELDS = [
    (r"^pos_embed$", "img_size / patch_size (number of patches) and embed_dim"),
    (r"^decoder_pos_embed$", "img_size / patch_size (number of patches) and decoder_embed_dim"),
    (r"^patch_embed\.proj\.weight$", "embed_dim, in_chans and patch_size"),
    (r"^blocks\.\d+\.mlp\.", "embed_dim and mlp_ratio"),
    (r"^decoder_blocks\.\d+\.mlp\.", "decoder_embed_dim and mlp_ratio"),
    (r"^decoder_embed\.weight$", "embed_dim and decoder_embed_dim"),
    (r"^decoder_pred\.weight$", "patch_size, in_chans and decoder_embed_dim"),
    (r"^decoder_pred\.bias$", "patch_size and in_chans"),
    (r"^(decoder_|mask_token)", "decoder_embed_dim"),
    (r"", "embed_dim"),
]


# ------------------------------------------------------------------ loading
def load_official_mae(model: MAE, state_dict_or_path, *, strict: bool = False) -> LoadReport:
    """Copy an official MAE state dict (or a file holding one) into `model`.

    Keys missing from the checkpoint keep the model's values; checkpoint keys the model lacks are
    ignored; both are listed in the returned report (strict=True raises CheckpointError instead).
    A key present on both sides with different shapes raises CheckpointError naming the key, both
    shapes and the config fields that decide it. Nothing is copied unless every shape matches.
    """
    sd, source = as_state_dict(state_dict_or_path)
    own = model.state_dict()
    common = [k for k in sd if k in own]
    if not common:
        looks_hf = any(k.startswith(("vit.", "decoder.decoder_")) for k in sd)
        hint = " These look like transformers ViTMAE keys: convert them with mimkit.hub.vitmae_to_mimkit first." \
            if looks_hf else ""
        raise CheckpointError(f"no key of {source} belongs to an MAE (first keys: {list(sd)[:5]}).{hint}")
    mismatched = [k for k in common if tuple(sd[k].shape) != tuple(own[k].shape)]
    if mismatched:
        raise CheckpointError(_shape_message(mismatched, sd, own, model.config, source))

    model.load_state_dict({k: sd[k] for k in common}, strict=False)
    report = LoadReport(loaded=common, missing=[k for k in own if k not in sd],
                        unexpected=[k for k in sd if k not in own])
    report.notes.extend(_notes(report, sd))
    if strict:
        report.raise_if_incomplete(source)
    return report


def mae_from_official(state_dict_or_path, args=None, *, strict: bool = False,
                      **config_overrides) -> tuple[MAE, LoadReport]:
    """Build an MAE whose architecture is read from the checkpoint (see `mae_config_from_state_dict`;
    a file's pickled args are used when `args` is not given) and load the weights into it."""
    if isinstance(state_dict_or_path, (str, Path)):
        state_dict_or_path = read_checkpoint(state_dict_or_path)
    if isinstance(state_dict_or_path, Checkpoint) and args is None:
        args = state_dict_or_path.args
    sd, _ = as_state_dict(state_dict_or_path)
    model = MAE(mae_config_from_state_dict(sd, args, **config_overrides))
    return model, load_official_mae(model, sd, strict=strict)


def _shape_message(keys, sd, own, config: MAEConfig, source: str) -> str:
    key = keys[0]
    fields = next(f for pattern, f in SHAPE_FIELDS if re.search(pattern, key))
    msg = (f"shape mismatch for {key!r}: {source} has {list(sd[key].shape)}, the model has {list(own[key].shape)}; "
           f"check the config's {fields}")
    if len(keys) > 1:
        others = [f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}" for k in keys[1:6]]
        msg += f" (also {', '.join(others)}{', ...' if len(keys) > 6 else ''})"
    try:
        inferred = mae_config_from_state_dict(sd, num_heads=1, decoder_num_heads=1)
    except (CheckpointError, ConfigError):
        return msg + "."
    names = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "decoder_embed_dim", "decoder_depth",
             "mlp_ratio")
    diffs = [f"{n}={getattr(inferred, n)!r} (model: {getattr(config, n)!r})" for n in names
             if not _same_value(n, getattr(inferred, n), getattr(config, n))]
    if diffs:
        msg += (f". The checkpoint looks like {', '.join(diffs)}; mimkit.hub.mae_config_from_state_dict builds "
                f"a matching config")
    return msg + "."


def _same_value(name, a, b) -> bool:
    return to_pair(a) == to_pair(b) if name == "img_size" else a == b


def _notes(report: LoadReport, sd) -> list[str]:
    notes = []
    if any(k.startswith("decoder_") or k == "mask_token" for k in report.missing):
        notes.append("no decoder in the checkpoint (encoder-only: fine-tuned, linear-probe or encoder release); "
                     "the decoder keeps its initialisation")
    if "norm.weight" in report.missing and "fc_norm.weight" in report.unexpected:
        notes.append("checkpoint was fine-tuned with global pooling: its fc_norm.* replaces norm.*, which keeps "
                     "its initialisation")
    heads = sorted({k.split(".")[0] for k in report.unexpected if k.startswith(("head", "fc_norm"))})
    if heads:
        notes.append(f"classification parts ignored: {', '.join(h + '.*' for h in heads)}")
    for k in ("pos_embed", "decoder_pos_embed"):
        if k in sd and not sd[k].any():
            notes.append(f"{k} in the checkpoint is all zeros, so positions carry no information (a freshly "
                         f"built transformers>=5 ViTMAE leaves its sin-cos tables at zero)")
    return notes


# -------------------------------------------------------------- inference
def mae_config_from_state_dict(state_dict: dict[str, torch.Tensor], args=None, *, num_heads: int | None = None,
                               decoder_num_heads: int | None = None, img_size=None, **overrides) -> MAEConfig:
    """Read an MAEConfig off official-MAE-keyed weights.

    From the shapes: embed_dim, in_chans, patch_size (patch_embed.proj.weight), depth and
    decoder_depth (block indices), mlp_ratio (mlp.fc1), decoder_embed_dim (decoder_embed), and
    img_size (pos_embed length, assumed square unless `img_size` or args.input_size says otherwise).
    Attention heads leave no trace in the shapes: they come from `num_heads` / `decoder_num_heads`,
    else from `args.model` when it names an official model (e.g. 'mae_vit_large_patch16'), else
    the official model with the same width and depth, else embed_dim // 64 (with a warning).
    `args` (argparse.Namespace or dict, e.g. Checkpoint.args) also gives mask_ratio and
    norm_pix_loss. Other MAEConfig fields can be set through `overrides`.
    """
    sd = strip_prefix(state_dict, "module.")
    if "patch_embed.proj.weight" not in sd:
        raise CheckpointError("cannot read an MAE architecture: the state dict has no 'patch_embed.proj.weight' "
                              f"(first keys: {list(sd)[:5]})")
    embed_dim, in_chans, ph, pw = sd["patch_embed.proj.weight"].shape
    if ph != pw:
        raise CheckpointError(f"patch_embed.proj.weight has non-square patches {ph}x{pw}; "
                              f"MAEConfig.patch_size is one int")
    depth = _count_blocks(sd, "blocks")
    if depth == 0:
        raise CheckpointError("cannot read an MAE architecture: no 'blocks.N.*' keys in the state dict")
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim

    fields = {"patch_size": ph, "in_chans": in_chans, "embed_dim": embed_dim, "depth": depth, "mlp_ratio": mlp_ratio,
              "img_size": _img_size(sd, ph, img_size, _arg(args, "input_size"))}
    if "decoder_embed.weight" in sd:
        dec_dim = sd["decoder_embed.weight"].shape[0]
        dec_depth = _count_blocks(sd, "decoder_blocks")
        fields.update(decoder_embed_dim=dec_dim, decoder_depth=dec_depth)
        if dec_depth:
            dec_ratio = sd["decoder_blocks.0.mlp.fc1.weight"].shape[0] / dec_dim
            if not math.isclose(dec_ratio, mlp_ratio):
                raise CheckpointError(f"decoder mlp ratio {dec_ratio} differs from the encoder's {mlp_ratio}; "
                                      f"mimkit's MAEConfig has a single mlp_ratio")
        fields["decoder_num_heads"] = decoder_num_heads or _decoder_heads(dec_dim)
    elif decoder_num_heads:
        fields["decoder_num_heads"] = decoder_num_heads
    fields["num_heads"] = num_heads or _encoder_heads(embed_dim, depth, _arg(args, "model"))
    for name in ("mask_ratio", "norm_pix_loss"):
        if _arg(args, name) is not None:
            fields[name] = _arg(args, name)

    valid = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown MAEConfig field(s) {unknown}; valid: {sorted(valid)}")
    fields.update(overrides)
    config = MAEConfig(**fields)
    config.validate()
    return config


def _arg(args, name):
    if args is None:
        return None
    return args.get(name) if isinstance(args, dict) else getattr(args, name, None)


def _count_blocks(sd, prefix: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
    if ids and ids != set(range(max(ids) + 1)):
        raise CheckpointError(f"{prefix} indices are not contiguous: {sorted(ids)}")
    return len(ids)


def _img_size(sd, patch: int, explicit, from_args):
    if explicit is not None:
        return explicit
    if "pos_embed" not in sd:
        if from_args is None:
            raise CheckpointError("cannot read img_size: no pos_embed in the state dict; pass img_size=...")
        return from_args
    length = sd["pos_embed"].shape[1] - 1
    if from_args is not None:
        h, w = (from_args, from_args) if isinstance(from_args, int) else tuple(from_args)
        if (h // patch) * (w // patch) == length:
            return from_args
    side = math.isqrt(length)
    if side * side != length:
        raise CheckpointError(f"pos_embed has {length} patch positions, not a square grid; pass img_size=(H, W)")
    return side * patch


def _encoder_heads(embed_dim: int, depth: int, model_name) -> int:
    if isinstance(model_name, str):
        name = model_name.removeprefix("mae_")
        if name in OFFICIAL_ENCODERS and OFFICIAL_ENCODERS[name][:2] == (embed_dim, depth):
            return OFFICIAL_ENCODERS[name][2]
    for dim, dep, heads, _ in OFFICIAL_ENCODERS.values():
        if (dim, dep) == (embed_dim, depth):
            return heads
    heads = _divisor_heads(embed_dim)
    warnings.warn(f"number of attention heads is not stored in the weights; guessing num_heads={heads} "
                  f"(embed_dim // 64). Pass num_heads=... if the model was trained otherwise.", stacklevel=3)
    return heads


def _decoder_heads(dim: int) -> int:
    if dim in OFFICIAL_DECODER_HEADS:
        return OFFICIAL_DECODER_HEADS[dim]
    heads = _divisor_heads(dim)
    warnings.warn(f"number of decoder attention heads is not stored in the weights; guessing "
                  f"decoder_num_heads={heads}. Pass decoder_num_heads=... if the model was trained otherwise.",
                  stacklevel=3)
    return heads


def _divisor_heads(dim: int) -> int:
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    return heads
