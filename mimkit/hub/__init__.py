"""Floor 6 face: checkpoint files and converters from other projects' checkpoints.

- mae_official: facebookresearch/mae checkpoints -> mimkit MAE, with a report of what matched,
                and the architecture read back from the weights.
- vitmae:       transformers ViTMAE (v4 and v5 key schemes) <-> mimkit MAE keys and configs.
- taming:       taming-transformers VQGAN checkpoints -> mimkit VQGAN (architecture read from the weights).
- vqkd_unilm:   microsoft/unilm BEiT v2 VQ-KD checkpoints -> mimkit VQKD (q/v bias folded into qkv).
- beitv2_unilm: microsoft/unilm BEiT v2 pretraining checkpoints <-> mimkit BEiTv2 (layer-scale names).
- mage_official: LTH14/mage checkpoints <-> mimkit MAGE (one vocab table split into codes / class / [MASK]);
                a whole checkpoint (with vqgan.*) -> a MAGE that samples.
- mage_vqgan:   MAGE's vqgan.* (the MaskGIT VQGAN in PyTorch) -> mimkit MaskGITVQGAN, strictly.
- flax_msgpack: flax.serialization msgpack files -> trees of arrays, without jax or flax.
- maskgit_flax: google-research/maskgit's transformer (flax) -> mimkit MaskGIT (architecture="bert").
- maskgit_vqgan_flax: google-research/maskgit's VQVAE tokenizer (flax) -> mimkit MaskGITVQGAN.
- timm_vit:     MAE / MAGE encoders -> timm vit_* state dicts (and timm -> MAE encoder).
- timm_beit:    BEiTv2 encoder <-> timm Beit (beitv2_* layout: per-block relative position tables).
- converters:   the table of all of the above (`mimkit convert --list`).
Safe reading of weight files lives at floor 0 (mimkit.files.state_dicts, re-exported here), and
save_pretrained / from_pretrained with the method table (mimkit.registry, re-exported here; every
model class also has them as methods, from mimkit.methods.base.Method).
"""
from .beitv2_unilm import beitv2_to_unilm, load_unilm_beitv2, unilm_to_beitv2
from .converters import Converter, converter_table, get_converter
from ..files.state_dicts import Checkpoint, load_state_dict_file, read_checkpoint, save_state_dict_file, strip_prefix
from .mae_official import load_official_mae, mae_config_from_state_dict, mae_from_official
from .flax_msgpack import read_flax_checkpoint, read_flax_msgpack
from .mage_official import load_official_mage, mage_from_official, mage_official_to_mimkit, mimkit_to_mage_official
from .mage_vqgan import load_mage_vqgan, maskgit_vqgan_from_mage
from .maskgit_flax import maskgit_from_flax
from .maskgit_vqgan_flax import maskgit_vqgan_from_flax
from ..registry import from_pretrained, save_pretrained
from .report import LoadReport
from .taming import load_taming_vqgan, vqgan_config_from_taming, vqgan_from_taming
from .timm_beit import beitv2_to_timm_beit, load_timm_beit, timm_beit_to_beitv2
from .timm_vit import mae_to_timm_vit, mage_to_timm_vit, timm_vit_to_mae
from .vqkd_unilm import load_unilm_vqkd, vqkd_config_from_unilm, vqkd_from_unilm
from .vitmae import (detect_vitmae_scheme, mae_config_to_vitmae, mimkit_to_vitmae, vitmae_config_to_mae,
                     vitmae_to_mimkit)

__all__ = ["Checkpoint", "load_state_dict_file", "read_checkpoint", "save_state_dict_file", "strip_prefix",
           "load_official_mae", "mae_config_from_state_dict", "mae_from_official", "LoadReport",
           "detect_vitmae_scheme", "mae_config_to_vitmae", "mimkit_to_vitmae", "vitmae_config_to_mae",
           "vitmae_to_mimkit", "load_taming_vqgan", "vqgan_config_from_taming", "vqgan_from_taming",
           "load_unilm_vqkd", "vqkd_config_from_unilm", "vqkd_from_unilm",
           "load_unilm_beitv2", "beitv2_to_unilm", "unilm_to_beitv2",
           "from_pretrained", "save_pretrained", "Converter", "converter_table",
           "get_converter", "load_official_mage", "mage_official_to_mimkit", "mimkit_to_mage_official",
           "mae_to_timm_vit", "mage_to_timm_vit", "timm_vit_to_mae",
           "beitv2_to_timm_beit", "load_timm_beit", "timm_beit_to_beitv2", "mage_from_official",
           "load_mage_vqgan", "maskgit_vqgan_from_mage", "read_flax_checkpoint", "read_flax_msgpack",
           "maskgit_from_flax", "maskgit_vqgan_from_flax"]

