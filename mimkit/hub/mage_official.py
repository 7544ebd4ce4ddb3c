"""Official MAGE checkpoints (LTH14/mage, models_mage.py) <-> mimkit MAGE (unconditional).

The transformer keys are the same on both sides (blocks.*, norm, decoder_embed, decoder_blocks.*,
decoder_norm: timm names). The rest differ:

  official (MaskedGenerativeEncoderViT)              mimkit MAGE
  token_emb.word_embeddings.weight (C+1001, D)       embed.tokens.weight (C+1, D): rows 0..C-1 and the
    one table: C codes, 1000 class ids, [MASK] last     [MASK] row (official id C+1000) as row C;
                                                     embed.classes.weight (1, D): the "fake class" row,
                                                        official id codebook_size + 1100 - 1024 = C+76
  token_emb.position_embeddings.weight (1+L, D)      embed.pos_embed (1, 1+L, D)
  token_emb.LayerNorm.*                              embed.norm.*
  decoder_pos_embed_learned (1, 1+L, Dd)             decoder_pos_embed
  mlm_layer.fc.* / mlm_layer.ln.*                    head.dense.* / head.norm.*
  mlm_layer.bias (1, 1, C+1001)                      head.bias (C,): the code entries (official sampling
                                                        reads logits[..., :C] only)
  vqgan.* (MaskGIT's VQGAN, the PyTorch port)       tokenizer.* of a MaskGITVQGAN (mimkit.hub.mage_vqgan,
                                                        same names, strict); a taming VQGAN's vqgan.*
                                                        (quant_conv, attention) goes through mimkit.hub.taming

`mage_from_official` builds the whole model from the file alone (transformer sizes and the MaskGIT
VQGAN read from the weights; heads not: embed_dim / 64 and 16 in the decoder, as MAGE-B/L), which
`mimkit convert mage-official IN OUT` saves as a model folder that samples.

Official tensors the forward pass never reads are set aside on import and written as zeros /
sin-cos-free placeholders on export so the file has the full official key set: patch_embed.proj.*,
cls_token, pos_embed, mask_token (pad_with_cls_token=True), decoder_pos_embed (fixed),
decoder_pred.*, token_emb.position_ids. The head's LayerNorm uses the official eps 1e-5 (PyTorch's
default in MlmLayer), the blocks 1e-6.
"""
import torch

from ..config_schema import to_dict
from ..errors import CheckpointError, ConfigError
from ..files.state_dicts import as_state_dict, count_numbered, strip_prefix
from .report import LoadReport, load_converted, report_converted

NUM_OFFICIAL_CLASSES = 1000
FAKE_CLASS_OFFSET = 1100 - 1024  # official fake_class_label = codebook_size + 1100 - 1024
SHARED_PREFIXES = ("blocks.", "norm.", "decoder_embed.", "decoder_blocks.", "decoder_norm.")
TABLES = ("token_emb.word_embeddings.weight", "token_emb.position_embeddings.weight", "mlm_layer.bias")
RENAMES = {"token_emb.LayerNorm.weight": "embed.norm.weight",
           "token_emb.LayerNorm.bias": "embed.norm.bias", "decoder_pos_embed_learned": "decoder_pos_embed",
           "mlm_layer.fc.weight": "head.dense.weight", "mlm_layer.fc.bias": "head.dense.bias",
           "mlm_layer.ln.weight": "head.norm.weight", "mlm_layer.ln.bias": "head.norm.bias"}
UNUSED = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "mask_token",
          "decoder_pos_embed", "decoder_pred.weight", "decoder_pred.bias", "token_emb.position_ids")


def official_codebook_size(sd: dict) -> int:
    rows = sd["token_emb.word_embeddings.weight"].shape[0]
    size = rows - NUM_OFFICIAL_CLASSES - 1
    if size <= 0:
        raise CheckpointError(f"token_emb.word_embeddings has {rows} rows; an official MAGE table has "
                              f"codebook + {NUM_OFFICIAL_CLASSES} + 1")
    return size


def mage_official_to_mimkit(sd: dict) -> tuple[dict, list[str]]:
    """Official MAGE keys -> (mimkit MAGE keys without tokenizer.*, official keys set aside: unused
    tensors and vqgan.*)."""
    sd = strip_prefix(dict(sd), "module.")
    for key in TABLES:
        if key not in sd:
            raise CheckpointError(f"not an official MAGE state dict: no {key}")
    size = official_codebook_size(sd)
    table = sd["token_emb.word_embeddings.weight"]
    out = {"embed.tokens.weight": torch.cat([table[:size], table[size + NUM_OFFICIAL_CLASSES:]]),
           "embed.classes.weight": table[size + FAKE_CLASS_OFFSET: size + FAKE_CLASS_OFFSET + 1],
           "embed.pos_embed": sd["token_emb.position_embeddings.weight"].unsqueeze(0),
           "head.bias": sd["mlm_layer.bias"].reshape(-1)[:size]}
    aside = []
    for key, value in sd.items():
        if key.startswith(SHARED_PREFIXES):
            out[key] = value
        elif key in RENAMES:
            out[RENAMES[key]] = value
        elif key in UNUSED or key.startswith("vqgan."):
            aside.append(key)
        elif key not in TABLES:
            out[key] = value  # unknown: left for the caller's unexpected-key check
    return out, aside


def mimkit_to_mage_official(sd: dict, img_size: int = 256, in_chans: int = 3) -> dict:
    """mimkit MAGE state dict (unconditional) -> the full official key set. A MaskGIT VQGAN
    tokenizer (no tokenizer.quant_conv.*) is written as vqgan.* (without mimkit's discriminator and
    bookkeeping); another tokenizer is left out. img_size / in_chans only shape the unused
    patch_embed placeholder."""
    if sd["embed.classes.weight"].shape[0] != 1:
        raise ConfigError("official MAGE is unconditional: a class-conditional mimkit MAGE (model.num_classes > 0) "
                          "has no official counterpart")
    tokens = sd["embed.tokens.weight"]
    size, dim = tokens.shape[0] - 1, tokens.shape[1]
    table = tokens.new_zeros(size + NUM_OFFICIAL_CLASSES + 1, dim)
    table[:size], table[-1] = tokens[:size], tokens[size]
    table[size + FAKE_CLASS_OFFSET] = sd["embed.classes.weight"][0]
    bias = sd["head.bias"].new_zeros(1, 1, table.shape[0])
    bias[0, 0, :size] = sd["head.bias"]
    length = sd["embed.pos_embed"].shape[1]
    patch = img_size // max(int(round((length - 1) ** 0.5)), 1)
    ddim = sd["decoder_pos_embed"].shape[-1]
    out = {k: v for k, v in sd.items() if k.startswith(SHARED_PREFIXES)}
    out.update({official: sd[mine] for official, mine in RENAMES.items()})
    out.update({"token_emb.word_embeddings.weight": table,
                "token_emb.position_embeddings.weight": sd["embed.pos_embed"][0],
                "token_emb.position_ids": torch.arange(length).unsqueeze(0), "mlm_layer.bias": bias,
                "patch_embed.proj.weight": tokens.new_zeros(dim, in_chans, patch, patch),
                "patch_embed.proj.bias": tokens.new_zeros(dim), "cls_token": tokens.new_zeros(1, 1, dim),
                "pos_embed": tokens.new_zeros(1, length, dim), "mask_token": tokens.new_zeros(1, 1, ddim),
                "decoder_pos_embed": tokens.new_zeros(1, length, ddim),
                "decoder_pred.weight": tokens.new_zeros(patch * patch * in_chans, ddim),
                "decoder_pred.bias": tokens.new_zeros(patch * patch * in_chans)})
    tokenizer = {k[len("tokenizer."):]: v for k, v in sd.items() if k.startswith("tokenizer.")}
    if tokenizer and "quant_conv.weight" not in tokenizer:
        from ..tokenizers.maskgit_vqgan import BOOKKEEPING

        out.update({f"vqgan.{k}": v for k, v in tokenizer.items() if k not in BOOKKEEPING and not k.startswith("loss.")})
    return out


def load_official_vqgan(tokenizer, vqgan: dict, *, strict: bool = True) -> LoadReport:
    """An official file's vqgan.* (prefix removed) into `tokenizer`: MaskGIT's VQGAN (MAGE's release)
    strictly through mimkit.hub.mage_vqgan, a taming VQGAN (quant_conv, attention) through
    mimkit.hub.taming. CheckpointError when the tokenizer is the other architecture."""
    from ..tokenizers.maskgit_vqgan import MaskGITVQGAN
    from ..tokenizers.vqgan import VQGAN

    taming_file = "quant_conv.weight" in vqgan
    if taming_file and isinstance(tokenizer, VQGAN):
        from .taming import load_taming_vqgan

        return load_taming_vqgan(tokenizer, vqgan, strict=strict)
    if not taming_file and isinstance(tokenizer, MaskGITVQGAN):
        from .mage_vqgan import load_mage_vqgan

        return load_mage_vqgan(tokenizer, vqgan, strict=strict, source="the checkpoint's vqgan.*")
    kind = "a taming VQGAN (vqgan.quant_conv.*)" if taming_file else "MaskGIT's VQGAN (no vqgan.quant_conv.*)"
    raise CheckpointError(f"the checkpoint's vqgan.* is {kind} but model.tokenizer is {type(tokenizer).__name__}; "
                          f"build the MAGE with mage_from_official (or tokenizer_config method "
                          f"{'vqgan' if taming_file else 'maskgit_vqgan'})")


def load_official_mage(model, state_dict_or_path, *, strict: bool = True) -> LoadReport:
    """Copy an official MAGE checkpoint (state dict or file) into a mimkit MAGE built with the same
    sizes; its vqgan.* (when present) goes into model.tokenizer (load_official_vqgan)."""
    sd, source = as_state_dict(state_dict_or_path)
    mine, aside = mage_official_to_mimkit(sd)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("tokenizer.")}
    report = report_converted(mine, own, source, "build the MAGE with the checkpoint's sizes",
                              where="after conversion")
    vqgan = {k[len("vqgan."):]: v for k, v in strip_prefix(dict(sd), "module.").items() if k.startswith("vqgan.")}
    if vqgan:
        report.notes.append(f"tokenizer: {load_official_vqgan(model.tokenizer, vqgan, strict=strict)}")
    else:
        report.notes.append("no vqgan.* in the checkpoint: model.tokenizer left as it is")
    load_converted(model, mine, report, source, strict)
    return report


def mage_config_from_official(state_dict_or_path, **overrides):
    """The MAGEConfig (with a maskgit_vqgan tokenizer_config) whose shapes match an official MAGE
    state dict with its vqgan.*: widths, depths, MLP ratio and codebook from the weights, the image
    size from the position table (grid side x the VQGAN's f). Heads are not in the weights:
    embed_dim / 64 (MAGE-B 12, MAGE-L 16) and 16 in the decoder unless `overrides` say otherwise."""
    from ..methods.mage import MAGEConfig
    from .mage_vqgan import maskgit_vqgan_config_from_mage

    sd, source = as_state_dict(state_dict_or_path)
    sd = strip_prefix(dict(sd), "module.")
    vqgan = {k[len("vqgan."):]: v for k, v in sd.items() if k.startswith("vqgan.")}
    if not vqgan:
        raise CheckpointError(f"{source}: no vqgan.* tensors, so no tokenizer to build; load the transformer into "
                              f"a MAGE you build with mimkit.hub.load_official_mage")
    if "quant_conv.weight" in vqgan:
        raise CheckpointError(f"{source}: its vqgan.* is a taming VQGAN (vqgan.quant_conv.*), not MAGE's MaskGIT VQGAN; "
                              f"load it into a MAGE you build with a vqgan tokenizer (mimkit.hub.load_official_mage)")
    mine, _ = mage_official_to_mimkit(sd)
    dim, length = mine["embed.tokens.weight"].shape[1], mine["embed.pos_embed"].shape[1] - 1
    side = int(round(length ** 0.5))
    if side * side != length:
        raise CheckpointError(f"{source}: token_emb.position_embeddings has {length + 1} rows; expected 1 + a square grid")
    tokenizer = maskgit_vqgan_config_from_mage(vqgan, img_size=1)
    tokenizer.img_size = side * tokenizer.downsample_factor
    if tokenizer.codebook_size != official_codebook_size(sd):
        raise CheckpointError(f"{source}: vqgan.quantize.embedding.weight has {tokenizer.codebook_size} codes but "
                              f"token_emb.word_embeddings has rows for {official_codebook_size(sd)}")
    fields = dict(tokenizer_config={"method": "maskgit_vqgan", "model": to_dict(tokenizer)}, embed_dim=dim,
                  depth=count_numbered(sd, r"^blocks\.(\d+)\."), num_heads=max(dim // 64, 1),
                  mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
                  decoder_embed_dim=sd["decoder_embed.weight"].shape[0],
                  decoder_depth=count_numbered(sd, r"^decoder_blocks\.(\d+)\."), decoder_num_heads=16)
    fields.update(overrides)
    return MAGEConfig(**fields)


def mage_from_official(state_dict_or_path, *, strict: bool = True, **overrides):
    """Build the whole MAGE (transformer + MaskGIT VQGAN tokenizer) an official checkpoint describes
    and load every tensor: (model in eval mode, LoadReport)."""
    from ..methods.mage import MAGE

    sd, source = as_state_dict(state_dict_or_path)
    model = MAGE(mage_config_from_official(sd, **overrides))
    return model.eval(), load_official_mage(model, sd, strict=strict)
