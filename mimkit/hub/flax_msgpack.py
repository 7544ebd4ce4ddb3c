"""Flax checkpoints written by `flax.serialization.to_bytes` / `msgpack_serialize`, read with no jax or flax.

The format (flax/serialization.py): one msgpack map (the state dict: nested maps with string keys;
tuples and lists become maps keyed "0", "1", ...). Leaves are msgpack ext types:
    code 1 (ndarray):  msgpack bytes of the tuple (shape, dtype name, C-order raw bytes)
    code 2 (complex):  msgpack bytes of (real, imag)
    code 3 (np scalar): as code 1, a 0-d array, unpacked to its scalar
Arrays over 2**30 bytes are stored as a map {"__msgpack_chunked_array__": True, "shape": {"0": ..},
"chunks": {"0": flat part, ...}}, joined back here. bfloat16 (jax's dtype; numpy has none) is read
as float32 (exact: bfloat16 is the upper half of a float32).

`read_flax_msgpack(path)` -> nested dict of numpy arrays; `flatten_tree(tree)` -> {"a/b/c": array};
`read_flax_checkpoint(path)` -> a Checkpoint of torch tensors under those flattened keys.
"""
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

NDARRAY, COMPLEX, NPSCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"
ROOTS = ("params/", "target/params/", "target/")  # roots of a flattened flax tree, most specific first
# dtype names numpy knows under the same name, plus bfloat16 (decoded by hand)
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "complex64", "complex128", "bfloat16")


def _array_from_bytes(data: bytes, where: str) -> np.ndarray:
    """The payload of ext type 1/3 -> a numpy array of its shape (bfloat16 -> float32)."""
    import msgpack

    try:
        shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    except Exception as err:  # noqa: BLE001 - any decoding failure means the same thing here
        raise CheckpointError(f"{where}: an array leaf is not a flax (shape, dtype, bytes) triple ({err})") from None
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else str(dtype_name)
    if name not in DTYPES:
        raise CheckpointError(f"{where}: array dtype {name!r} is not supported (known: {', '.join(DTYPES)}); "
                              f"convert the checkpoint's arrays to one of them")
    if name == "bfloat16":  # the upper 16 bits of a float32
        raw = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
        array = raw.view(np.float32)
    else:
        array = np.frombuffer(buffer, dtype=np.dtype(name))
    shape = tuple(int(s) for s in shape)
    if array.size != int(np.prod(shape)):
        raise CheckpointError(f"{where}: an array of shape {shape} holds {array.size} values; the file is damaged")
    return array.reshape(shape).copy()  # a writable copy (frombuffer views are read-only)


def _unchunk(node: dict) -> np.ndarray:
    shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
    chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
    return np.concatenate([np.asarray(c).reshape(-1) for c in chunks]).reshape(shape)


def _join_chunks(node):
    """Replace chunked-array maps by their arrays, recursively."""
    if isinstance(node, dict):
        if CHUNKED in node:
            return _unchunk(node)
        return {k: _join_chunks(v) for k, v in node.items()}
    return node


def unpack_flax_bytes(data: bytes, where: str = "<bytes>") -> dict:
    """The bytes of a flax msgpack checkpoint -> its state dict (nested dicts, numpy leaves).
    `where` names the source in errors."""
    import msgpack

    def ext_hook(code: int, payload: bytes):
        if code in (NDARRAY, NPSCALAR):
            array = _array_from_bytes(payload, where)
            return array[()] if code == NPSCALAR else array
        if code == COMPLEX:
            real, imag = msgpack.unpackb(payload)
            return complex(real, imag)
        raise CheckpointError(f"{where}: unknown msgpack ext type {code} (flax writes 1 = ndarray, 2 = complex, "
                              f"3 = numpy scalar); is this a flax checkpoint?")

    try:
        tree = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        raise CheckpointError(f"{where} is not a flax msgpack checkpoint (flax.serialization.to_bytes): "
                              f"{type(err).__name__}: {err}") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{where} is not a flax msgpack checkpoint: it holds a {type(tree).__name__}, "
                              f"not a map of parameters")
    return _join_chunks(tree)


def read_flax_msgpack(path) -> dict:
    """A flax checkpoint file (e.g. MaskGIT's maskgit_imagenet256_checkpoint) -> nested dict of numpy
    arrays (and python scalars where the file stored them). CheckpointError for a missing file, a file
    that is not msgpack, an unknown ext type or dtype."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"flax checkpoint {str(path)!r} does not exist (or is a directory); pass the "
                              f"file written by flax.serialization.to_bytes")
    return unpack_flax_bytes(path.read_bytes(), str(path))


def flatten_tree(tree: dict, prefix: str = "", sep: str = "/") -> dict:
    """{"a": {"b": {"c": x}}} -> {"a/b/c": x} (keys joined with `sep`, in the tree's order)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_tree(value, name, sep))
        else:
            flat[name] = value
    return flat


def strip_root(flat: dict) -> dict:
    """Drop a flattened tree's root ("params/" of flax variables, or an old flax optimizer's
    "target/params/" / "target/") from every key, when every key has it. Variables with other
    collections beside "params" (e.g. "batch_stats") keep the "params/" keys only."""
    for root in ROOTS:
        if flat and all(k.startswith(root) for k in flat):
            return {k[len(root):]: v for k, v in flat.items()}
    if any(k.startswith("params/") for k in flat):
        return {k[len("params/"):]: v for k, v in flat.items() if k.startswith("params/")}
    return dict(flat)


def unflatten_tree(flat: dict, sep: str = "/") -> dict:
    """{"a/b/c": x} -> {"a": {"b": {"c": x}}} (the inverse of flatten_tree)."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(sep)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def read_flax_checkpoint(path):
    """A flax checkpoint file -> mimkit.files.state_dicts.Checkpoint: state_dict {"params/a/b": tensor}
    (the flattened tree, arrays as torch tensors), extra: the leaves that are not arrays."""
    import torch

    from ..files.state_dicts import Checkpoint

    arrays, extra = {}, {}
    for name, value in flatten_tree(read_flax_msgpack(path)).items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[name] = torch.from_numpy(value)
        else:
            extra[name] = value
    if not arrays:
        raise CheckpointError(f"{path}: the flax checkpoint holds no arrays")
    return Checkpoint(arrays, extra=extra)
