"""Reading and writing state-dict files safely: safetensors, or torch.load(weights_only=True) only.

A checkpoint on disk is one of
- ``.safetensors``: tensors only, nothing to unpickle;
- a ``torch.save`` file (``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``), read with
  ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers and refuses any
  other pickled object. The one extra type allowed is ``argparse.Namespace``, because the official
  MAE (and many research) training scripts pickle their command-line ``args`` next to the weights.

Wrappers are taken off: ``{'model': sd, 'args': ..., 'epoch': ...}``, ``{'state_dict': sd}`` and
the ``module.`` prefix that DistributedDataParallel adds to every key.

Integrity (mimkit/engine/integrity.py): a file listed in a ``checksums.sha256`` beside it (written
by save_pretrained, or by ``sha256sum``) is verified before it is read, and a state dict holding NaN
or inf is refused, naming the keys.
"""
import argparse
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .integrity import check_finite, verify_checksum
from ..errors import CheckpointError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
SAFETENSORS_SUFFIXES = (".safetensors",)
WRAPPER_KEYS = ("model", "state_dict", "module")  # tried in this order when unwrapping
ALLOWED_GLOBALS = (argparse.Namespace,)
REMEDY = "download or copy it again"


@dataclass
class Checkpoint:
    """What a checkpoint file holds once unwrapped.

    state_dict: the tensors, keys without wrapper or ``module.`` prefixes.
    args:       the pickled training arguments (argparse.Namespace or dict), if the file had them.
    extra:      the other top-level entries (epoch, optimizer state, ...), unchanged.
    """

    state_dict: dict[str, torch.Tensor]
    args: object | None = None
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------- reading
def read_checkpoint(path) -> Checkpoint:
    """Load a safetensors or torch.save file into a `Checkpoint` without running pickled code.

    Raises CheckpointError naming the file when it does not exist, is not a checkpoint, differs
    from the sha256 a checksums.sha256 beside it records, would need to unpickle code (anything
    beyond tensors, plain containers and argparse.Namespace), holds no tensors, or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        where = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {str(path)!r} {where}; pass the path of a .safetensors or "
                              f".pth/.pt/.bin file")
    verify_checksum(path, REMEDY)
    if _format(path) == "safetensors":
        checkpoint = Checkpoint(_read_safetensors(path))
    else:
        checkpoint = _unwrap(_read_torch(path), path)
    check_finite(checkpoint.state_dict, f"checkpoint {str(path)!r}", REMEDY)
    return checkpoint


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped ('model' / 'state_dict' / 'module.'), on CPU."""
    return read_checkpoint(path).state_dict


def as_state_dict(obj) -> tuple[dict[str, torch.Tensor], str]:
    """A path, Checkpoint or (possibly wrapped: 'model' / 'state_dict' / 'module.') dict ->
    (flat state dict, a name for messages: "checkpoint 'PATH'" or "the state dict")."""
    if isinstance(obj, (str, Path)):
        return read_checkpoint(obj).state_dict, f"checkpoint {str(obj)!r}"
    if isinstance(obj, Checkpoint):
        return obj.state_dict, "checkpoint"
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        return strip_prefix(obj, "module."), "the state dict"
    raise CheckpointError(f"expected a state dict or a checkpoint path, got {type(obj).__name__}")


def count_numbered(state_dict: dict, pattern: str) -> int:
    r"""1 + the largest index the regex `pattern`'s group 1 matches in the keys (0 when none):
    e.g. r"^encoder\.blocks\.(\d+)\." -> the number of encoder blocks."""
    found = {int(m.group(1)) for k in state_dict for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def _format(path: Path) -> str:
    """'safetensors' or 'torch': by suffix, else by the first bytes of the file."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip archive (torch.save) or a raw pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        return "safetensors"
    raise CheckpointError(f"checkpoint {str(path)!r} is neither a safetensors file nor a torch.save "
                          f"file (suffixes {', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)})")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors' own errors, or torch's on a header naming impossible shapes
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file: "
                              f"{str(e)[:200] or type(e).__name__}") from None


def _read_torch(path: Path):
    try:
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weightsunpickler" not in str(e).lower():
            raise CheckpointError(f"checkpoint {str(path)!r} is not a PyTorch checkpoint: {e}") from None
        raise CheckpointError(
            f"refusing to unpickle code from checkpoint {str(path)!r}: it needs more than tensors, plain "
            f"containers and argparse.Namespace to load ({_unpickle_reason(e)}). mimkit only loads pickles "
            f"with torch.load(weights_only=True); nothing from the file was run. If you trust the file, "
            f"re-save its tensors as .safetensors first.") from None
    except Exception as e:  # zip / pickle structure errors: not a checkpoint at all
        detail = f"{type(e).__name__}: {e}"
        raise CheckpointError(f"checkpoint {str(path)!r} is not a PyTorch or safetensors checkpoint "
                              f"({detail[:200]})") from None


def _unpickle_reason(error: Exception) -> str:
    """The informative line of torch's weights-only error (e.g. 'unsupported GLOBAL posix.system')."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "global" in low or "unsupported" in low:
            return ln[:200]
    return lines[-1][:200] if lines else type(error).__name__


def _unwrap(obj, path: Path) -> Checkpoint:
    """Peel training wrappers off a loaded object until a flat {name: tensor} dict remains."""
    args, extra = None, {}
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        if args is None and obj.get("args") is not None:
            args = obj["args"]
        extra.update({k: v for k, v in obj.items() if k not in (inner, "args")})
        obj = obj[inner]
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        keys = list(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict: expected a mapping of names to "
                              f"tensors, or one under 'model' / 'state_dict'; found {keys}")
    return Checkpoint(strip_prefix(obj, "module."), args, extra)


def _is_tensor_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    """Drop `prefix` from the keys when every key has it (e.g. DDP's 'module.'); else unchanged."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# ------------------------------------------------------------------- writing
def save_state_dict_file(state_dict: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a .safetensors file (each tensor made contiguous and unshared first)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(f"save_state_dict_file writes safetensors; give {str(path)!r} a .safetensors suffix")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
