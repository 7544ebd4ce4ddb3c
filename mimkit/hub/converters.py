"""Every checkpoint converter in one table: name -> (method, import, export, tested formats).

import_fn: foreign state dict -> mimkit state dict of `method` (key mapping only);
export_fn: mimkit state dict -> foreign state dict. Either may be None (one direction only).
build: foreign Checkpoint + config overrides -> (complete mimkit model, LoadReport), the
architecture read from the weights; `mimkit convert NAME IN OUT` writes its model with
save_pretrained (a model folder every command and from_pretrained take). A row whose checkpoint
cannot make a complete model has a build that raises IncompleteModel naming what is missing.
produces: what `mimkit convert NAME IN OUT` writes (for --list).
Loading into a model you built, with a report of what matched, is done by the loader named in
`loader` (e.g. mimkit.hub.load_official_mae). `mimkit convert --list` prints this table.
"""
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CheckpointError, ConfigError
from ..files.state_dicts import Checkpoint
from . import mae_official, mage_official, taming, timm_beit, timm_vit, vitmae
from .report import LoadReport, compress_keys

FOLDER = "a model folder (save_pretrained)"
VITMAE_SETTINGS = " (heads, eps, mask ratio from the transformers config.json beside IN, when there is one)"


class IncompleteModel(CheckpointError):
    """A converter's checkpoint cannot make a complete mimkit model (the message names what is missing)."""


@dataclass(frozen=True)
class Converter:
    method: str
    foreign: str  # what the other side is
    import_fn: Callable | None
    export_fn: Callable | None
    loader: str  # mimkit.hub function that loads a file into a model with a LoadReport
    formats: str  # what the tests convert (tests/test_converters.py, test_mae_parity.py, ...)
    build: Callable | None = None  # (Checkpoint, overrides) -> (complete model, LoadReport)
    produces: str = "-"  # what `mimkit convert NAME IN OUT` writes
    settings: Callable | None = None  # IN path -> config fields found beside the weights (defaults of --set)
    read: Callable | None = None  # IN path -> Checkpoint, for files read_checkpoint does not read (flax msgpack)


def identity(sd: dict) -> dict:
    """mimkit keeps these official names: conversion is a copy."""
    return dict(sd)


def taming_import(sd: dict) -> dict:
    return taming.split_taming_state_dict(sd)[0]


def mage_import(sd: dict) -> dict:
    return mage_official.mage_official_to_mimkit(sd)[0]


def _complete(name: str, method: str, report: LoadReport, what: str) -> None:
    """IncompleteModel (one line) when the model has keys the checkpoint did not fill."""
    if report.missing:
        groups = compress_keys(report.missing)
        shown = ", ".join(groups[:6]) + (", ..." if len(groups) > 6 else "")
        raise IncompleteModel(f"{name}: the checkpoint cannot make a complete {method} model: it has no {shown} "
                              f"({what}); nothing written")


MAE_PARTIAL = "an encoder-only or fine-tuned checkpoint: load it into an MAE you build with mimkit.hub.load_official_mae"


def build_official_mae(checkpoint: Checkpoint, overrides: dict):
    model, report = mae_official.mae_from_official(checkpoint, **overrides)
    _complete("mae-official", "mae", report, MAE_PARTIAL)
    return model.eval(), report


def build_official_mage(checkpoint: Checkpoint, overrides: dict):
    from ..methods.mage import MAGEConfig

    _check_fields(MAGEConfig, overrides)
    model, report = mage_official.mage_from_official(checkpoint.state_dict, **overrides)
    _complete("mage-official", "mage", report, "a MAGE file without its tokenizer")
    return model, report


def build_vitmae(scheme: str):
    def build(checkpoint: Checkpoint, overrides: dict):
        sd = vitmae.vitmae_to_mimkit(checkpoint.state_dict, scheme)
        model, report = mae_official.mae_from_official(sd, **overrides)
        _complete(f"vitmae-{scheme}", "mae", report, "a ViTMAEModel without decoder: convert a ViTMAEForPreTraining")
        return model.eval(), report
    return build


def _check_fields(config_class, overrides: dict) -> None:
    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} field(s) {unknown}; valid: {sorted(valid)}")


def build_taming(checkpoint: Checkpoint, overrides: dict):
    from ..tokenizers.vqgan import VQGANConfig

    _check_fields(VQGANConfig, overrides)
    return taming.vqgan_from_taming(checkpoint.state_dict, **overrides)


def build_vqkd(checkpoint: Checkpoint, overrides: dict):
    from ..tokenizers.vqkd import VQKDConfig
    from . import vqkd_unilm

    _check_fields(VQKDConfig, overrides)
    return vqkd_unilm.vqkd_from_unilm(checkpoint.state_dict, **overrides)


def build_maskgit_flax(checkpoint: Checkpoint, overrides: dict):
    """google-research/maskgit's flax transformer + --set tokenizer=PATH -> MaskGIT ("bert")."""
    from ..methods.maskgit import MaskGITConfig
    from . import maskgit_flax

    _check_fields(MaskGITConfig, overrides)
    overrides = dict(overrides)
    path = str(overrides.pop("tokenizer", "") or "")
    if not path:
        raise IncompleteModel("maskgit-flax-transformer: a MaskGIT model samples through its tokenizer: add --set "
                              "tokenizer=PATH (MaskGIT's tokenizer_imagenet256_checkpoint or a mimkit tokenizer "
                              "model folder); nothing written")
    tokenizer = maskgit_flax.load_tokenizer(path, maskgit_flax.num_image_tokens(checkpoint.state_dict))
    model, report = maskgit_flax.maskgit_from_flax(checkpoint.state_dict, tokenizer, **overrides)
    model.config.tokenizer = path
    return model, report


def build_maskgit_vqgan_flax(checkpoint: Checkpoint, overrides: dict):
    """google-research/maskgit's flax tokenizer -> MaskGITVQGAN (img_size 256 unless --set img_size=N)."""
    from ..tokenizers.maskgit_vqgan import MaskGITVQGANConfig
    from .maskgit_vqgan_flax import maskgit_vqgan_from_flax

    _check_fields(MaskGITVQGANConfig, overrides)
    return maskgit_vqgan_from_flax(checkpoint.state_dict, **overrides)


def refuse(name: str, message: str):
    def build(checkpoint: Checkpoint, overrides: dict):
        raise IncompleteModel(f"{name}: {message}; nothing written")
    return build


def _table() -> dict[str, Converter]:
    folder_test = "; tests/test_convert_folders.py: the written folder loads and equals the in-memory conversion"
    table = {
        "mae-official": Converter("mae", "facebookresearch/mae models_mae.py (.pth, {'model': sd, 'args'})",
                                  identity, identity, "load_official_mae / mae_from_official",
                                  "tests/test_mae_official_reference.py: a synthetic official .pth with args "
                                  "(official names, sin-cos positions) through `mimkit convert`, equal loss/pred/mask "
                                  "(norm_pix_loss on and off) vs a hand-written models_mae.py forward" + folder_test,
                                  build_official_mae, FOLDER + "; pretraining checkpoints only (encoder + decoder)"),
        "vitmae-v5": Converter("mae", "transformers >= 5 ViTMAEForPreTraining", vitmae.vitmae_to_mimkit,
                               lambda sd: vitmae.mimkit_to_vitmae(sd, "v5"), "vitmae_to_mimkit + load_official_mae",
                               "tests/test_mae_parity.py: strict load into a real ViTMAEForPreTraining, equal "
                               "loss/pred/grads" + folder_test, build_vitmae("v5"), FOLDER + VITMAE_SETTINGS,
                               vitmae.settings_beside),
        "vitmae-v4": Converter("mae", "transformers 4.x ViTMAEForPreTraining",
                               lambda sd: vitmae.vitmae_to_mimkit(sd, "v4"), lambda sd: vitmae.mimkit_to_vitmae(sd, "v4"),
                               "vitmae_to_mimkit + load_official_mae", "v4 -> mimkit -> v5 route of "
                               "tests/test_mae_parity.py" + folder_test, build_vitmae("v4"), FOLDER + VITMAE_SETTINGS,
                               vitmae.settings_beside),
        "taming-vqgan": Converter("vqgan", "CompVis taming-transformers VQModel (.ckpt 'state_dict')", taming_import,
                                  None, "load_taming_vqgan / vqgan_from_taming",
                                  "tests/test_taming_reference.py: a synthetic Lightning .ckpt with taming names "
                                  "(attention, nin_shortcut, discriminator, LPIPS), equal codes/codebook loss/decoded "
                                  "images vs a hand-written taming VQModel forward; tests/test_vqgan.py: the key set"
                                  + folder_test, build_taming,
                                  FOLDER + " (img_size 256 unless --set img_size=N: it places the attention)"),
        "mage-official": Converter("mage", "LTH14/mage models_mage.py (unconditional) with its vqgan.* (MaskGIT VQGAN)",
                                   mage_import, mage_official.mimkit_to_mage_official,
                                   "load_official_mage / mage_from_official",
                                   "tests/test_converters.py, tests/test_maskgit_vqgan.py: the full MAGE-B key set "
                                   "(433 keys, shrunk shapes) with seeded values; equal logits vs a hand-written "
                                   "models_mage.py forward, equal codes/images vs a hand-written MaskGIT VQGAN "
                                   "forward; the written folder samples with `mimkit generate`",
                                   build_official_mage,
                                   FOLDER + " (transformer + MaskGIT VQGAN tokenizer; heads embed_dim/64 and 16 "
                                   "unless --set num_heads=N decoder_num_heads=N)"),
        "timm-vit-mae": Converter("mae", "timm vit_* VisionTransformer (num_classes=0)", None,
                                  timm_vit.mae_to_timm_vit, "timm_vit_to_mae",
                                  "tests/test_converters.py: timm key list and shapes, round trip into a MAE; "
                                  "tests/test_mae_official_reference.py: equal encoder tokens/features vs a "
                                  "hand-written timm VisionTransformer forward"),
        "timm-vit-mage": Converter("mage", "timm vit_* (pre_norm=True) blocks/norm_pre/norm/pos_embed (no patch_embed)",
                                   None, timm_vit.mage_to_timm_vit, "-",
                                   "tests/test_converters.py: timm key list and shapes; "
                                   "tests/test_mae_official_reference.py: equal encoder tokens and mean features vs a "
                                   "hand-written timm VisionTransformer forward over MAGE's token embeddings"),
        "timm-beit": Converter("beitv2", "timm Beit, beitv2_* layout (num_classes=0, global_pool='token')",
                               timm_beit.timm_beit_to_beitv2, timm_beit.beitv2_to_timm_beit, "load_timm_beit",
                               "tests/test_timm_beit.py: timm key list and shapes; round trip, equal features; "
                               "equal to a hand-written timm Beit forward; tests/test_convert_folders.py: the refusal",
                               refuse("timm-beit", "cannot write a complete BEiT v2 model: a timm Beit is the encoder "
                                      "only (no mask_token, lm_head, cls_pt_layers, VQ-KD tokenizer); load it into a "
                                      "BEiTv2 you build with mimkit.hub.load_timm_beit"),
                               "refused: only the encoder part (no MIM head, aggregation head, tokenizer)"),
    }
    from .flax_msgpack import read_flax_checkpoint
    from .maskgit_flax import maskgit_flax_to_mimkit
    table["maskgit-flax-transformer"] = Converter(
        "maskgit", "google-research/maskgit maskgit_transformer.py (flax msgpack, e.g. maskgit_imagenet256_checkpoint)",
        maskgit_flax_to_mimkit, None, "maskgit_from_flax",
        "tests/test_maskgit_official.py: synthetic official flax tree written as msgpack, equal logits vs a "
        "hand-written official forward", build_maskgit_flax,
        FOLDER + "; needs --set tokenizer=PATH (the flax tokenizer file or a tokenizer folder)",
        read=read_flax_checkpoint)
    from .maskgit_vqgan_flax import maskgit_vqgan_flax_to_mimkit
    table["maskgit-flax-tokenizer"] = Converter(
        "maskgit_vqgan", "google-research/maskgit vqgan_tokenizer.py VQVAE (flax msgpack, e.g. "
        "tokenizer_imagenet256_checkpoint)", maskgit_vqgan_flax_to_mimkit, None, "maskgit_vqgan_from_flax",
        "tests/test_maskgit_official.py: synthetic official flax tree, equal codes and decoded images vs a "
        "hand-written official forward", build_maskgit_vqgan_flax,
        FOLDER + " (img_size 256 unless --set img_size=N)", read=read_flax_checkpoint)
    try:  # written beside this module by the BEiT v2 / VQ-KD work
        from . import beitv2_unilm
        table["beitv2-unilm"] = Converter("beitv2", "microsoft/unilm BEiT v2 pretraining", beitv2_unilm.unilm_to_beitv2,
                                          beitv2_unilm.beitv2_to_unilm, "load_unilm_beitv2",
                                          "tests/test_unilm_reference.py: synthetic official keys, both heads' "
                                          "MIM logits and the loss vs a functional forward written from "
                                          "modeling_pretrain.py, and the export; "
                                          "tests/test_convert_folders.py: the refusal",
                                          refuse("beitv2-unilm", "cannot write a complete BEiT v2 model: unilm "
                                                 "pretraining checkpoints have no VQ-KD tokenizer (tokenizer.*) and "
                                                 "mimkit reads no BEiT v2 architecture from them yet; load them into a "
                                                 "BEiTv2 you build with mimkit.hub.load_unilm_beitv2"),
                                          "refused: only the BEiT v2 part (no VQ-KD tokenizer)")
    except ImportError:
        pass
    try:
        from . import vqkd_unilm
        table["vqkd-unilm"] = Converter("vqkd", "microsoft/unilm BEiT v2 VQ-KD tokenizer",
                                        lambda sd: vqkd_unilm.unilm_to_mimkit(sd)[0], None,
                                        "load_unilm_vqkd / vqkd_from_unilm",
                                        "tests/test_unilm_reference.py: synthetic official keys, codes, decoded "
                                        "teacher features and loss vs a functional forward written from "
                                        "modeling_vqkd.py" + folder_test, build_vqkd,
                                        FOLDER + " (heads: width / 64 unless --set num_heads=N)")
    except ImportError:
        pass
    return table


def converter_table() -> dict[str, Converter]:
    """name -> Converter for every converter mimkit has."""
    return _table()


def get_converter(name: str) -> Converter:
    table = converter_table()
    if name not in table:
        raise ConfigError(f"unknown converter {name!r}; known: {', '.join(table)} (see `mimkit convert --list`)")
    return table[name]


def format_table() -> str:
    """The table as aligned text lines (for `mimkit convert --list`): what `mimkit convert NAME IN OUT`
    writes and what the tests check each row against."""
    rows = [("name", "method", "import", "export", "loader", "other side", "convert NAME IN OUT writes",
             "tested")]
    for name, c in converter_table().items():
        rows.append((name, c.method, "yes" if c.import_fn else "-", "yes" if c.export_fn else "-", c.loader,
                     c.foreign, c.produces if c.import_fn else "- (export only: --export writes the other side's "
                     "file)", c.formats))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + " | ".join(r[5:]) for r in rows)
