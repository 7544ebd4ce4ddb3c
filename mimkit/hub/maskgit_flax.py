"""google-research/maskgit's released transformer (flax, maskgit_transformer.py) -> mimkit MaskGIT with
architecture "bert".

The flax tree (flattened with "/", under "params/"; `mimkit.hub.flax_msgpack` reads the file):
    Embed_0/word_embeddings/embedding          (V + C + 1, D)  codes, classes (label + V), [MASK]
    Embed_0/position_embeddings/embedding      (L + 1, D)      class position first
    Embed_0/embeddings_ln/{scale,bias}
    TransformerLayer_i/Attention_0/self_attention/{query,key,value}/kernel (D, H, d), bias (H, d)
    TransformerLayer_i/Attention_0/self_attention/out/kernel (H, d, D), bias (D,)
    TransformerLayer_i/Attention_0/attention_output_ln/{scale,bias}
    TransformerLayer_i/Mlp_0/{intermediate_output,layer_output}/{kernel (in, out), bias}
    TransformerLayer_i/Mlp_0/layer_output_ln/{scale,bias}
    MlmLayer_0/mlm_dense/{kernel,bias}, MlmLayer_0/mlm_ln/{scale,bias}, MlmLayer_0/mlm_bias/bias (V + C + 1,)
Flax Dense kernels are (in, out): torch weights are their transpose; q, k and v are fused into
attn.qkv (rows q, then k, then v; heads in order). Hyperparameters the weights do not fix take the
official config's values: LayerNorm eps 1e-12, dropout 0.1, label smoothing 0.1, no label dropout.
"""
import re

import torch

from ..errors import CheckpointError
from .flax_msgpack import strip_root
from .report import LoadReport, report_converted

LAYER = re.compile(r"TransformerLayer_(\d+)/(.+)")
LN = {"scale": "weight", "bias": "bias"}
# flax module path inside a layer -> mimkit module inside blocks.i
LAYER_MODULES = {"Attention_0/attention_output_ln": "norm1", "Mlp_0/intermediate_output": "fc1",
                 "Mlp_0/layer_output": "fc2", "Mlp_0/layer_output_ln": "norm2",
                 "Attention_0/self_attention/out": "attn.proj"}
TOP_MODULES = {"Embed_0/embeddings_ln": "embed.norm", "MlmLayer_0/mlm_dense": "head.dense",
               "MlmLayer_0/mlm_ln": "head.norm"}
QKV = "Attention_0/self_attention/"


def _dense(prefix: str, leaf: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    """A Dense or LayerNorm leaf -> (mimkit key, tensor): kernels transposed (and DenseGeneral's
    (H, d, D) out kernel flattened to (H * d, D) first), LayerNorm scale -> weight."""
    if leaf == "kernel":
        return f"{prefix}.weight", value.reshape(-1, value.shape[-1]).t().contiguous()
    return f"{prefix}.{LN.get(leaf, leaf)}", value


def _fuse_qkv(layer: dict, i: int) -> dict:
    """{query,key,value}/{kernel (D, H, d), bias (H, d)} of layer i -> attn.qkv weight (3D, D), bias (3D,)."""
    out = {}
    for leaf, key in (("kernel", "weight"), ("bias", "bias")):
        parts = [layer.get(f"{QKV}{name}/{leaf}") for name in ("query", "key", "value")]
        if all(p is not None for p in parts):
            if leaf == "kernel":
                parts = [p.reshape(p.shape[0], -1).t() for p in parts]
            else:
                parts = [p.reshape(-1) for p in parts]
            out[f"blocks.{i}.attn.qkv.{key}"] = torch.cat(parts).contiguous()
    return out


def maskgit_flax_to_mimkit(sd: dict) -> dict:
    """Flattened flax tree {"params/Embed_0/...": tensor} -> mimkit MaskGIT ("bert") state dict.
    Keys with no place in mimkit keep their flax names (a LoadReport lists them as unexpected)."""
    sd, out, layers = strip_root(sd), {}, {}
    for name, value in sd.items():
        m = LAYER.fullmatch(name)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif name == "Embed_0/word_embeddings/embedding":
            out["embed.word_embeddings.weight"] = value
        elif name == "Embed_0/position_embeddings/embedding":
            out["embed.position_embeddings.weight"] = value
        elif name == "MlmLayer_0/mlm_bias/bias":
            out["head.bias"] = value
        elif name.rsplit("/", 1)[0] in TOP_MODULES:
            module, leaf = name.rsplit("/", 1)
            k, v = _dense(TOP_MODULES[module], leaf, value)
            out[k] = v
        else:
            out[name] = value
    for i, layer in layers.items():
        out.update(_fuse_qkv(layer, i))
        for name, value in layer.items():
            module, leaf = name.rsplit("/", 1)
            if module in LAYER_MODULES:
                k, v = _dense(f"blocks.{i}.{LAYER_MODULES[module]}", leaf, value)
                out[k] = v
            elif not name.startswith(QKV):
                out[f"TransformerLayer_{i}/{name}"] = value
    return out


def maskgit_config_from_flax(sd: dict, codebook_size: int) -> dict:
    """The MaskGITConfig fields the flax tree fixes (width, depth, heads, MLP ratio, classes), for a
    tokenizer of `codebook_size` codes, plus the official config's other values."""
    sd = strip_root(sd)
    try:
        vocab, dim = sd["Embed_0/word_embeddings/embedding"].shape
        heads = sd["TransformerLayer_0/Attention_0/self_attention/query/kernel"].shape[1]
        mlp = sd["TransformerLayer_0/Mlp_0/intermediate_output/kernel"].shape[1]
    except KeyError as err:
        raise CheckpointError(f"not a MaskGIT transformer checkpoint: it has no {err.args[0]} (keys start "
                              f"{sorted(sd)[:3]})") from None
    num_classes = vocab - codebook_size - 1
    if num_classes < 0:
        raise CheckpointError(f"the transformer's token table has {vocab} rows, fewer than the tokenizer's "
                              f"{codebook_size} codes + [MASK]: is this the right tokenizer?")
    depth = len({int(m.group(1)) for k in sd for m in [LAYER.fullmatch(k)] if m})
    return {"embed_dim": int(dim), "depth": depth, "num_heads": int(heads), "mlp_ratio": mlp / dim,
            "num_classes": int(num_classes), "architecture": "bert", "norm_eps": 1e-12, "dropout": 0.1,
            "label_dropout": 0.0, "label_smoothing": 0.1}


def tokenizer_spec(tokenizer) -> dict:
    """A tokenizer model -> the {"method", "model"} dict a token model's tokenizer_config holds."""
    from ..config_schema import to_dict

    return {"method": tokenizer.method_name, "model": to_dict(tokenizer.config)}


def maskgit_from_flax(sd: dict, tokenizer, **overrides):
    """Flattened flax transformer tree + a mimkit tokenizer model (its weights are copied in) ->
    (MaskGIT "bert" in eval mode, LoadReport). `overrides`: MaskGITConfig fields (e.g. dropout).
    CheckpointError when a key is missing, a shape differs, or the positions do not match the
    tokenizer's grid."""
    from ..methods.maskgit import MaskGIT, MaskGITConfig

    fields = maskgit_config_from_flax(sd, tokenizer.codebook_size) | {"tokenizer_config": tokenizer_spec(tokenizer)}
    config = MaskGITConfig(**(fields | overrides))
    converted = maskgit_flax_to_mimkit(sd)
    positions = converted.get("embed.position_embeddings.weight")
    h, w = tokenizer.grid_size
    if positions is not None and positions.shape[0] != h * w + 1:
        raise CheckpointError(f"the transformer has {positions.shape[0]} positions but the tokenizer makes "
                              f"{h}x{w} tokens (+1 class position): use the tokenizer of the same image size")
    model = MaskGIT(config)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("tokenizer.")}
    report = report_converted(converted, own, "maskgit flax checkpoint", "is it the transformer of the same "
                              "MaskGIT config?")
    for what, keys in (("has nothing for the model's", report.missing), ("has keys mimkit has no place for:",
                                                                        report.unexpected)):
        if keys:
            more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
            raise CheckpointError(f"maskgit flax checkpoint {what} {', '.join(keys[:4])}{more}: is it "
                                  f"google-research/maskgit's transformer (maskgit_imagenet256_checkpoint)?")
    model.load_state_dict({**{k: converted[k] for k in report.loaded},
                           **{f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}})
    report.notes.append(f"tokenizer {tokenizer.method_name} copied in")
    return model.eval(), report


def num_image_tokens(sd: dict) -> int | None:
    """Image tokens per sequence of a flattened flax transformer tree (its positions minus the class one)."""
    positions = strip_root(sd).get("Embed_0/position_embeddings/embedding")
    return None if positions is None else int(positions.shape[0]) - 1


def load_tokenizer(path: str, num_tokens: int | None = None):
    """`--set tokenizer=PATH` of the converter: a mimkit model folder / checkpoint of a tokenizer, or
    MaskGIT's flax tokenizer file (converted on the way, its image size made to give `num_tokens`
    tokens) -> the tokenizer model."""
    from pathlib import Path

    if Path(path).is_dir() or Path(path).suffix in (".safetensors", ".pt", ".pth"):
        from ..registry import load_model

        model, config = load_model(path)
        if not getattr(model, "is_tokenizer", False):
            raise CheckpointError(f"{path} holds a {config.method} model, not a tokenizer; give the tokenizer's "
                                  f"model folder or MaskGIT's tokenizer_imagenet256_checkpoint")
        return model
    from .flax_msgpack import read_flax_checkpoint
    from .maskgit_vqgan_flax import maskgit_vqgan_from_flax

    return maskgit_vqgan_from_flax(read_flax_checkpoint(path).state_dict, num_tokens=num_tokens)[0]


__all__ = ["maskgit_flax_to_mimkit", "maskgit_config_from_flax", "maskgit_from_flax", "load_tokenizer",
           "num_image_tokens", "tokenizer_spec", "LoadReport"]
