"""The flax msgpack reader (mimkit.hub.flax_msgpack) against files written here the way
flax.serialization.to_bytes writes them: arrays as ext type 1 (msgpack of (shape, dtype name,
C-order bytes)), numpy scalars as ext 3, complex as ext 2, chunked giant arrays as maps."""
import msgpack
import numpy as np
import pytest
import torch

from mimkit.errors import CheckpointError
from mimkit.hub.flax_msgpack import (flatten_tree, read_flax_checkpoint, read_flax_msgpack, unflatten_tree,
                                     unpack_flax_bytes)


def array_ext(shape, dtype_name: str, raw: bytes, code: int = 1) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb((list(shape), dtype_name, raw), use_bin_type=True))


def flax_default(x):
    """flax's _msgpack_ext_pack, written from its format description."""
    if isinstance(x, np.ndarray):
        return array_ext(x.shape, x.dtype.name, x.tobytes("C"))
    if isinstance(x, np.generic):
        return array_ext((), np.asarray(x).dtype.name, np.asarray(x).tobytes(), code=3)
    if isinstance(x, complex):
        return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    return x


def to_bytes(tree) -> bytes:
    return msgpack.packb(tree, default=flax_default, strict_types=True)


def test_nested_tree_round_trips_with_dtypes_shapes_and_scalars(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"params": {"Dense_0": {"kernel": rng.standard_normal((3, 4)).astype(np.float32),
                                   "bias": np.arange(4, dtype=np.float32)},
                       "Embed_0": {"embedding": rng.integers(-5, 5, (2, 3, 2)).astype(np.int32)}},
            "step": np.int64(7), "scale": np.array(2.5, dtype=np.float64), "empty": np.zeros((0, 3), np.float16),
            "z": complex(1.0, -2.0)}
    path = tmp_path / "ckpt"
    path.write_bytes(to_bytes(tree))
    got = read_flax_msgpack(path)
    for key in ("kernel", "bias"):
        want = tree["params"]["Dense_0"][key]
        assert got["params"]["Dense_0"][key].dtype == np.float32
        np.testing.assert_array_equal(got["params"]["Dense_0"][key], want)
    emb = got["params"]["Embed_0"]["embedding"]
    assert emb.dtype == np.int32 and emb.shape == (2, 3, 2)
    np.testing.assert_array_equal(emb, tree["params"]["Embed_0"]["embedding"])
    assert got["step"] == 7 and isinstance(got["step"], np.int64)  # ext 3: a numpy scalar
    assert got["scale"].shape == () and got["scale"] == 2.5  # a 0-d array stays an array
    assert got["empty"].shape == (0, 3) and got["empty"].dtype == np.float16
    assert got["z"] == complex(1.0, -2.0)
    got["params"]["Dense_0"]["bias"][0] = 9.0  # arrays are writable copies
    flat = flatten_tree(got)
    assert sorted(flat) == ["empty", "params/Dense_0/bias", "params/Dense_0/kernel", "params/Embed_0/embedding",
                            "scale", "step", "z"]
    assert unflatten_tree(flat)["params"]["Embed_0"]["embedding"] is emb


def test_bfloat16_is_read_as_exact_float32():
    # bfloat16 = the upper 16 bits of a float32: 1.5 = 0x3FC0, -2.25 = 0xC010, 3.0 = 0x4040
    raw = np.array([0x3FC0, 0xC010, 0x4040, 0x0000], dtype=np.uint16).tobytes()
    tree = unpack_flax_bytes(msgpack.packb({"w": array_ext((2, 2), "bfloat16", raw)}))
    assert tree["w"].dtype == np.float32
    np.testing.assert_array_equal(tree["w"], np.array([[1.5, -2.25], [3.0, 0.0]], np.float32))


def test_chunked_arrays_are_joined():
    full = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    flat = full.reshape(-1)
    chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 3, "2": 4},
               "chunks": {"0": flat[:10], "1": flat[10:20], "2": flat[20:]}}
    tree = unpack_flax_bytes(to_bytes({"a": {"big": chunked}, "top": chunked}))
    np.testing.assert_array_equal(tree["a"]["big"], full)
    np.testing.assert_array_equal(tree["top"], full)


def test_checkpoint_holds_flattened_tensors_and_the_rest_as_extra(tmp_path):
    path = tmp_path / "ckpt"
    path.write_bytes(to_bytes({"params": {"x": {"kernel": np.ones((2, 3), np.float32)}}, "step": np.int32(3)}))
    checkpoint = read_flax_checkpoint(path)
    assert list(checkpoint.state_dict) == ["params/x/kernel"]
    assert torch.equal(checkpoint.state_dict["params/x/kernel"], torch.ones(2, 3))
    assert checkpoint.extra == {"step": 3}


@pytest.mark.parametrize("data, words", [
    (b"\xc1\x00garbage", "not a flax msgpack checkpoint"),  # 0xc1 is never used in msgpack
    (b"", "not a flax msgpack checkpoint"),
    (None, "not a flax msgpack checkpoint"),  # truncated in the middle of an array
    (msgpack.packb([1, 2, 3]), "holds a list"),
    (msgpack.packb({"w": array_ext((2,), "float8_e4m3", b"\x00\x00")}), "dtype 'float8_e4m3' is not supported"),
    (msgpack.packb({"w": array_ext((3,), "float32", b"\x00" * 8)}), "holds 2 values"),
    (msgpack.packb({"w": msgpack.ExtType(9, b"")}), "unknown msgpack ext type 9"),
])
def test_bad_files_are_one_line_checkpoint_errors(tmp_path, data, words):
    if data is None:
        data = to_bytes({"w": np.ones((64,), np.float32)})[:-50]
    path = tmp_path / "bad.msgpack"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=words) as err:
        read_flax_msgpack(path)
    assert "\n" not in str(err.value) and "bad.msgpack" in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_flax_msgpack(tmp_path / "nope")


def test_strip_root_drops_the_variables_root():
    from mimkit.hub.flax_msgpack import strip_root

    assert strip_root({"params/a/b": 1, "params/c": 2}) == {"a/b": 1, "c": 2}
    assert strip_root({"target/params/a": 1}) == {"a": 1}
    assert strip_root({"params/a": 1, "batch_stats/m": 2}) == {"a": 1}
    assert strip_root({"a": 1, "b/c": 2}) == {"a": 1, "b/c": 2}
