"""Floor 6 face: checkpoint files and converters from other projects' checkpoints.

- files:        safe reading (safetensors, torch.load(weights_only=True) + argparse.Namespace) and
                safetensors writing of state dicts; unwraps 'model' / 'state_dict' / 'module.'.
- mae_official: facebookresearch/mae checkpoints -> mimkit MAE, with a report of what matched,
                and the architecture read back from the weights.
- vitmae:       transformers ViTMAE (v4 and v5 key schemes) <-> mimkit MAE keys and configs.
- taming:       taming-transformers VQGAN checkpoints -> mimkit VQGAN (architecture read from the weights).
"""
from .files import Checkpoint, load_state_dict_file, read_checkpoint, save_state_dict_file, strip_prefix
from .mae_official import load_official_mae, mae_config_from_state_dict, mae_from_official
from .report import LoadReport
from .taming import load_taming_vqgan, vqgan_config_from_taming, vqgan_from_taming
from .vitmae import (detect_vitmae_scheme, mae_config_to_vitmae, mimkit_to_vitmae, vitmae_config_to_mae,
                     vitmae_to_mimkit)

__all__ = ["Checkpoint", "load_state_dict_file", "read_checkpoint", "save_state_dict_file", "strip_prefix",
           "load_official_mae", "mae_config_from_state_dict", "mae_from_official", "LoadReport",
           "detect_vitmae_scheme", "mae_config_to_vitmae", "mimkit_to_vitmae", "vitmae_config_to_mae",
           "vitmae_to_mimkit", "load_taming_vqgan", "vqgan_config_from_taming", "vqgan_from_taming"]
