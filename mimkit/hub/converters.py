"""Every checkpoint converter in one table: name -> (method, import, export, tested formats).

import_fn: foreign state dict -> mimkit state dict of `method` (key mapping only);
export_fn: mimkit state dict -> foreign state dict. Either may be None (one direction only).
Loading into a model, with a report of what matched, is done by the loader named in `loader`
(e.g. mimkit.hub.load_official_mae). `mimkit convert --list` prints this table;
`mimkit convert NAME IN OUT.safetensors [--export]` applies one row to a file.
"""
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from . import mage_official, taming, timm_beit, timm_vit, vitmae


@dataclass(frozen=True)
class Converter:
    method: str
    foreign: str  # what the other side is
    import_fn: Callable | None
    export_fn: Callable | None
    loader: str  # mimkit.hub function that loads a file into a model with a LoadReport
    formats: str  # what the tests convert (tests/test_converters.py, test_mae_parity.py, ...)


def identity(sd: dict) -> dict:
    """mimkit keeps these official names: conversion is a copy."""
    return dict(sd)


def taming_import(sd: dict) -> dict:
    return taming.split_taming_state_dict(sd)[0]


def mage_import(sd: dict) -> dict:
    return mage_official.mage_official_to_mimkit(sd)[0]


def _table() -> dict[str, Converter]:
    table = {
        "mae-official": Converter("mae", "facebookresearch/mae models_mae.py (.pth, {'model': sd, 'args'})",
                                  identity, identity, "load_official_mae / mae_from_official",
                                  ".pth with args, safetensors; synthetic checkpoints with official names"),
        "vitmae-v5": Converter("mae", "transformers >= 5 ViTMAEForPreTraining", vitmae.vitmae_to_mimkit,
                               lambda sd: vitmae.mimkit_to_vitmae(sd, "v5"), "vitmae_to_mimkit + load_official_mae",
                               "tests/test_mae_parity.py: strict load into a real ViTMAEForPreTraining, equal loss/pred/grads"),
        "vitmae-v4": Converter("mae", "transformers 4.x ViTMAEForPreTraining",
                               lambda sd: vitmae.vitmae_to_mimkit(sd, "v4"), lambda sd: vitmae.mimkit_to_vitmae(sd, "v4"),
                               "vitmae_to_mimkit + load_official_mae", "v4 -> mimkit -> v5 route of tests/test_mae_parity.py"),
        "taming-vqgan": Converter("vqgan", "CompVis taming-transformers VQModel (.ckpt 'state_dict')", taming_import,
                                  None, "load_taming_vqgan / vqgan_from_taming",
                                  "Lightning .ckpt, synthetic taming names"),
        "mage-official": Converter("mage", "LTH14/mage models_mage.py (unconditional)", mage_import,
                                   mage_official.mimkit_to_mage_official, "load_official_mage",
                                   "synthetic official key set; equal logits vs a hand-written official forward"),
        "timm-vit-mae": Converter("mae", "timm vit_* VisionTransformer (num_classes=0)", None,
                                  timm_vit.mae_to_timm_vit, "timm_vit_to_mae",
                                  "timm key list and shapes; round trip into a MAE, equal features"),
        "timm-vit-mage": Converter("mage", "timm vit_* blocks/norm/pos_embed (no patch_embed)", None,
                                   timm_vit.mage_to_timm_vit, "-", "timm key list and shapes"),
        "timm-beit": Converter("beitv2", "timm Beit, beitv2_* layout (num_classes=0, global_pool='token')",
                               timm_beit.timm_beit_to_beitv2, timm_beit.beitv2_to_timm_beit, "load_timm_beit",
                               "tests/test_timm_beit.py: timm key list and shapes; round trip, equal features; "
                               "equal to a hand-written timm Beit forward"),
    }
    try:  # written beside this module by the BEiT v2 / VQ-KD work
        from . import beitv2_unilm
        table["beitv2-unilm"] = Converter("beitv2", "microsoft/unilm BEiT v2 pretraining", beitv2_unilm.unilm_to_beitv2,
                                          beitv2_unilm.beitv2_to_unilm, "load_unilm_beitv2",
                                          "tests/test_beitv2.py (synthetic unilm names)")
    except ImportError:
        pass
    try:
        from . import vqkd_unilm
        table["vqkd-unilm"] = Converter("vqkd", "microsoft/unilm BEiT v2 VQ-KD tokenizer",
                                        lambda sd: vqkd_unilm.unilm_to_mimkit(sd)[0], None,
                                        "load_unilm_vqkd / vqkd_from_unilm", "tests/test_vqkd.py (synthetic unilm names)")
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
    """The table as aligned text lines (for `mimkit convert --list`)."""
    rows = [("name", "method", "import", "export", "loader", "other side", "tested")]
    for name, c in converter_table().items():
        rows.append((name, c.method, "yes" if c.import_fn else "-", "yes" if c.export_fn else "-", c.loader,
                     c.foreign, c.formats))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] + " | " + r[6] for r in rows)
