"""Token cache: the codes of every image, for K views, pre-extracted once by a frozen tokenizer.

Masked token models (MaskGIT, MAGE) train on the discrete codes of a frozen VQ tokenizer. Running
the tokenizer on every batch costs more than the transformer step on a small model; a cache
pays it once. Layout of a cache folder:

    DIR/codes.npy       (N, K, h, w) uint8 / uint16 / int32 (smallest holding codebook_size),
                        memory-mapped: view k of image i is codes[i, k]
    DIR/labels.npy      (N,) int64, -1 when unknown
    DIR/crop_boxes.npy  (N, crops, 5) float32 (x0, y0, w, h, flip) of the crop views (only with crops)
    DIR/manifest.json   format, tokenizer fingerprint, codebook_size, grid_size, views, dtype,
                        shape, counts, sha256 + size of every array file, source dataset

The folder is assembled under a temporary name beside DIR and renamed into place once every
file is written and flushed, manifest last: a crash leaves no DIR (only a hidden .DIR.tmp-*),
never a half cache that looks complete. `TokenCacheDataset` refuses a cache whose manifest is
missing or unreadable, made by another tokenizer, or whose arrays do not match the manifest
(size: truncated; sha256: corrupted) with a DataError naming the file and the fix.
"""
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .views import BASE_VIEWS, apply_view, crop_view_names, draw_crop_boxes

FORMAT = "mimkit-token-cache"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CODES_FILE = "codes.npy"
LABELS_FILE = "labels.npy"
BOXES_FILE = "crop_boxes.npy"
HASH_CHUNK = 1 << 24  # bytes read at once when hashing


@runtime_checkable
class Tokenizer(Protocol):
    """What the cache needs of a tokenizer (VQGAN, VQ-KD, or anything alike).

    encode: images (N, C, H, W) float in [0, 1] -> codes (N, h, w) int64 in [0, codebook_size)
    fingerprint: a string that identifies the exact weights (same string <=> same codes)
    The expected input size/channels are read from `config.img_size` / `config.in_chans` when present.
    """

    codebook_size: int
    grid_size: tuple[int, int]

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


# ------------------------------------------------------------------ small helpers
def rerun_hint(cache_dir: Path) -> str:
    return f"re-run `mimkit tokenize CKPT --data NAME --out {cache_dir}` to rebuild it"


def code_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer dtype holding codes 0..codebook_size-1 (int32 beyond 65536)."""
    if codebook_size <= 1 << 8:
        return np.dtype(np.uint8)
    if codebook_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """tokenizer.fingerprint(), or for a module without one the sha256 of its class name and state dict."""
    method = getattr(tokenizer, "fingerprint", None)
    if callable(method):
        return str(method())
    if not isinstance(tokenizer, torch.nn.Module):
        raise TypeError(f"{type(tokenizer).__name__} has no fingerprint() and is not an nn.Module")
    digest = hashlib.sha256(type(tokenizer).__qualname__.encode())
    for key, value in sorted(tokenizer.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_input(tokenizer) -> tuple[int | None, int | None]:
    """(channels, image side) the tokenizer expects, from tokenizer.config (None when unknown)."""
    config = getattr(tokenizer, "config", None)
    size = getattr(config, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return getattr(config, "in_chans", None), size


def tokenizer_device(tokenizer) -> torch.device:
    if isinstance(tokenizer, torch.nn.Module):
        for tensor in [*tokenizer.parameters(), *tokenizer.buffers()]:
            return tensor.device
    return torch.device("cpu")


def image_batch(dataset, start: int, stop: int) -> dict[str, torch.Tensor]:
    """Images (B, C, H, W) float in [0, 1] and labels (B,) of items start..stop-1 (get_batch when
    the dataset has it; uint8 items made float by mimkit.data.device_batch)."""
    from ..data.device_batch import images_to_float, to_device_float  # local: mimkit.data imports this module

    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return to_device_float(get_batch(torch.arange(start, stop)))
    items = [dataset[i] for i in range(start, stop)]
    if not all(isinstance(item, dict) and "images" in item for item in items):
        raise DataError(f"dataset item {start}..{stop - 1} is not an image dict (unreadable image skipped?); "
                        "a token cache needs every image: fix or remove the file, or use on_error=raise")
    labels = [item.get("labels", torch.tensor(-1)) for item in items]
    return {"images": images_to_float(torch.stack([item["images"] for item in items])),
            "labels": torch.stack([torch.as_tensor(label, dtype=torch.long) for label in labels])}


# ------------------------------------------------------------------ writing
def build_token_cache(tokenizer, dataset, out_dir: str | Path, views: Sequence[str] = BASE_VIEWS, crops: int = 0,
                      seed: int = 0, crop_scale: tuple[float, float] = (0.8, 1.0), batch_size: int = 256,
                      progress: bool = True, source: str | None = None, overwrite: bool = False) -> Path:
    """Encode every image of `dataset` in each view and write a token cache folder at `out_dir`.

    tokenizer: see `Tokenizer` (encode, codebook_size, grid_size, fingerprint).
    dataset: items {"images": (C, H, W) in [0, 1], "labels"}; `get_batch(indices)` is used when present.
    views: any of "identity", "hflip"; `crops` extra views "crop0".."crop{crops-1}" are random
        resized crops (area fraction in `crop_scale`) + a coin-flip mirror, drawn from `seed`.
    source: the dataset's name, recorded in the manifest.
    overwrite: replace an existing cache at out_dir (otherwise that is an error).
    Returns the cache folder. The folder appears only when complete (see the module docstring).
    """
    out_dir = Path(out_dir)
    if batch_size <= 0 or crops < 0 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"need batch_size > 0, crops >= 0, 0 < crop_scale[0] <= crop_scale[1] <= 1; "
                         f"got {batch_size}, {crops}, {crop_scale}")
    views = tuple(views) + crop_view_names(crops)
    for name in views[:len(views) - crops]:
        if name not in BASE_VIEWS:
            raise DataError(f"unknown view {name!r}; choose from {', '.join(BASE_VIEWS)} (and --crops N for crops)")
    if not views or len(set(views)) != len(views):
        raise DataError(f"views must be non-empty and distinct, got {list(views)}")
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir} already exists; choose another --out or pass --overwrite to replace it")
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset is empty: nothing to tokenize")
    codebook_size = int(tokenizer.codebook_size)
    grid = tuple(int(s) for s in tokenizer.grid_size)
    fingerprint = tokenizer_fingerprint(tokenizer)
    channels, size = tokenizer_input(tokenizer)
    dtype = code_dtype(codebook_size)
    shape = (n, len(views), *grid)
    boxes = draw_crop_boxes(n, crops, seed, crop_scale) if crops else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        codes = np.lib.format.open_memmap(tmp / CODES_FILE, mode="w+", dtype=dtype, shape=shape)
        labels = np.empty(n, dtype=np.int64)
        start_time = time.perf_counter()
        encode_views(tokenizer, dataset, views, boxes, codes, labels, batch_size, progress)
        codes.flush()
        del codes
        np.save(tmp / LABELS_FILE, labels)
        files = [CODES_FILE, LABELS_FILE]
        if boxes is not None:
            np.save(tmp / BOXES_FILE, boxes.numpy())
            files.append(BOXES_FILE)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "tokenizer_fingerprint": fingerprint, "codebook_size": codebook_size, "grid_size": list(grid),
            "image_size": size, "in_chans": channels,
            "views": list(views), "crops": {"count": crops, "seed": seed, "scale": list(crop_scale)} if crops else None,
            "dtype": dtype.name, "shape": list(shape), "num_images": n, "num_views": len(views),
            "labels": {"known": int((labels >= 0).sum()),
                       "classes": int(labels.max()) + 1 if (labels >= 0).any() else 0},
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                      for name in files},
            "source": source if source is not None else type(dataset).__name__,
            "seconds": round(time.perf_counter() - start_time, 3),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        publish_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def encode_views(tokenizer, dataset, views: Sequence[str], boxes: torch.Tensor | None, codes: np.ndarray,
                 labels: np.ndarray, batch_size: int, progress: bool) -> None:
    """Fill codes (N, K, h, w) with tokenizer.encode of each view of each batch, and labels (N,)."""
    from tqdm import tqdm

    n, grid = len(dataset), codes.shape[2:]
    channels, size = tokenizer_input(tokenizer)
    device = tokenizer_device(tokenizer)
    was_training = getattr(tokenizer, "training", False)
    if isinstance(tokenizer, torch.nn.Module):
        tokenizer.eval()
    try:
        with torch.inference_mode(), tqdm(total=n, desc=f"tokenize {len(views)} views", unit="img",
                                           disable=not progress) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch = image_batch(dataset, start, stop)
                images = batch["images"].to(device, torch.float32)
                if start == 0:
                    check_images(images, channels, size)
                batch_boxes = boxes[start:stop] if boxes is not None else None
                for k, name in enumerate(views):
                    encoded = tokenizer.encode(apply_view(name, images, batch_boxes))
                    encoded = check_codes(encoded, stop - start, grid, tokenizer.codebook_size)
                    codes[start:stop, k] = encoded.cpu().numpy()
                labels[start:stop] = batch["labels"].cpu().numpy()
                bar.update(stop - start)
    finally:
        if was_training:
            tokenizer.train()


def publish_folder(tmp: Path, out_dir: Path) -> None:
    """fsync every file of the finished folder `tmp`, then rename it to out_dir (replacing an old one)."""
    for name in os.listdir(tmp):
        with open(tmp / name, "rb") as handle:
            os.fsync(handle.fileno())
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
    if out_dir.exists():  # overwrite: move the old cache out of the way first
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "cache")
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def check_images(images: torch.Tensor, channels: int | None, size: int | None) -> None:
    c, h, w = images.shape[1:]
    if (channels is not None and c != channels) or (size is not None and (h, w) != (size, size)):
        raise DataError(f"the dataset's images are {c}x{h}x{w} but the tokenizer expects "
                        f"{channels or c}x{size or h}x{size or w}; build the dataset at the tokenizer's size")


def check_codes(codes: torch.Tensor, n: int, grid: tuple[int, ...], codebook_size: int) -> torch.Tensor:
    """The tokenizer's output must be (n, h, w) integers in [0, codebook_size): a broken tokenizer
    would otherwise write a cache that looks fine."""
    if tuple(codes.shape) != (n, *grid) or codes.dtype.is_floating_point:
        raise ValueError(f"tokenizer.encode returned {codes.dtype} {tuple(codes.shape)}, "
                         f"expected integer codes of shape {(n, *grid)} (grid_size {grid})")
    if n and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"tokenizer.encode returned codes outside [0, {codebook_size})")
    return codes


# ------------------------------------------------------------------ reading
def read_manifest(cache_dir: Path) -> dict:
    """The manifest of a cache folder, or DataError naming what is missing/wrong and the fix."""
    file = cache_dir / MANIFEST_FILE
    if not cache_dir.is_dir():
        raise DataError(f"token cache {cache_dir} does not exist; build it with "
                        f"`mimkit tokenize CKPT --data NAME --out {cache_dir}`")
    if not file.is_file():
        raise DataError(f"{file} is missing: {cache_dir} is not a complete token cache; {rerun_hint(cache_dir)}")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {file} ({err}); {rerun_hint(cache_dir)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{file} is not a mimkit token cache manifest; {rerun_hint(cache_dir)}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{file} has format version {manifest.get('format_version')}, this mimkit reads "
                        f"{FORMAT_VERSION}; {rerun_hint(cache_dir)}")
    return manifest


def verify_file(cache_dir: Path, name: str, expected: dict, checksum: bool) -> None:
    """Size (truncation) and optionally sha256 (corruption) of one array file against the manifest."""
    file = cache_dir / name
    if not file.is_file():
        raise DataError(f"{file} is missing; {rerun_hint(cache_dir)}")
    size = file.stat().st_size
    if size != expected["bytes"]:
        raise DataError(f"{file} has {size} bytes but {MANIFEST_FILE} says {expected['bytes']} "
                        f"(truncated or replaced); {rerun_hint(cache_dir)}")
    if checksum and file_sha256(file) != expected["sha256"]:
        raise DataError(f"{file} is corrupted (its sha256 differs from {MANIFEST_FILE}); {rerun_hint(cache_dir)}")


class TokenCacheDataset(Dataset):
    """Items {"tokens": (h, w) int64, "labels": int64 0-d} from a token cache folder.

    views: "random" draws one of the K cached views per item from torch's global RNG (so a
        trainer that saves/restores torch.get_rng_state() replays the same draws); an int or a
        view name ("identity", "hflip", "crop0", ...) always serves that view.
    expected_fingerprint: refuse a cache made by another tokenizer (DataError).
    verify: check the sha256 of every array file on open (cheap at Fashion-MNIST/ImageNet-256
        scale: ~1 s per GB); file sizes and the array header are always checked.
    pairs: also serve "tokens_2", a second view different from the first (two augmented views of
        each image for contrastive training); needs a cache with at least 2 views.
    `get_batch(indices)` serves {"tokens": (B, h, w), "labels": (B,)} with no per-item loop.
    """

    def __init__(self, cache_dir: str | Path, expected_fingerprint: str | None = None,
                 views: str | int = "random", verify: bool = True, pairs: bool = False):
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest = read_manifest(self.cache_dir)
        try:
            self.view_names = list(manifest["views"])
            self.codebook_size = int(manifest["codebook_size"])
            self.grid_size = tuple(int(s) for s in manifest["grid_size"])
            self.fingerprint = str(manifest["tokenizer_fingerprint"])
            shape, dtype, files = tuple(manifest["shape"]), np.dtype(manifest["dtype"]), manifest["files"]
            expected_files = {CODES_FILE, LABELS_FILE} | ({BOXES_FILE} if manifest.get("crops") else set())
            for name in expected_files:
                _ = files[name]["bytes"], files[name]["sha256"]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{self.cache_dir / MANIFEST_FILE} lacks or garbles field {err}; "
                            f"{rerun_hint(self.cache_dir)}") from None
        if expected_fingerprint is not None and expected_fingerprint != self.fingerprint:
            raise DataError(f"{self.cache_dir / MANIFEST_FILE}: the cache was made by tokenizer "
                            f"{self.fingerprint[:16]}, not the expected {expected_fingerprint[:16]}; "
                            f"{rerun_hint(self.cache_dir)} with this tokenizer")
        for name in sorted(expected_files):
            verify_file(self.cache_dir, name, files[name], verify)
        if len(shape) != 4 or shape[1:] != (len(self.view_names), *self.grid_size):
            raise DataError(f"{self.cache_dir / MANIFEST_FILE}: shape {list(shape)} does not match "
                            f"{len(self.view_names)} views of a {self.grid_size} grid; {rerun_hint(self.cache_dir)}")
        self._codes = None
        self.open_codes(check=(shape, dtype))  # checks the array header against the manifest
        self.labels = torch.from_numpy(self.load_array(LABELS_FILE, (shape[0],), np.dtype(np.int64)))
        self.view = self.resolve_view(views)
        self.pairs = pairs
        if pairs and (self.num_views < 2 or self.view is not None):
            raise DataError(f"two views per image need views='random' and a cache with >= 2 views; {self.cache_dir} "
                            f"holds {self.view_names}")

    # ---- arrays
    def load_array(self, name: str, shape: tuple, dtype: np.dtype, mmap: bool = False) -> np.ndarray:
        file = self.cache_dir / name
        try:
            array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {file} ({err}); {rerun_hint(self.cache_dir)}") from None
        if array.shape != shape or array.dtype != dtype:
            raise DataError(f"{file} holds {array.dtype} {list(array.shape)} but {MANIFEST_FILE} says "
                            f"{dtype} {list(shape)}; {rerun_hint(self.cache_dir)}")
        return array

    def open_codes(self, check=None) -> np.ndarray:
        """The memory-mapped codes (N, K, h, w), opened lazily (and again in each DataLoader worker)."""
        if self._codes is None:
            shape, dtype = check or (tuple(self.manifest["shape"]), np.dtype(self.manifest["dtype"]))
            self._codes = self.load_array(CODES_FILE, shape, dtype, mmap=True)
        return self._codes

    def __getstate__(self) -> dict:  # workers re-open the memmap instead of pickling its contents
        state = dict(self.__dict__)
        state["_codes"] = None
        return state

    # ---- views
    def resolve_view(self, views: str | int) -> int | None:
        """None for "random", else the index of the fixed view."""
        if views == "random":
            return None
        if isinstance(views, str) and views in self.view_names:
            return self.view_names.index(views)
        if isinstance(views, int) and not isinstance(views, bool) and 0 <= views < len(self.view_names):
            return views
        raise DataError(f"views={views!r}: {self.cache_dir} holds views {self.view_names} "
                        f"(give 'random', an index 0..{len(self.view_names) - 1} or a name)")

    @property
    def num_views(self) -> int:
        return len(self.view_names)

    def draw_views(self, n: int) -> np.ndarray:
        if self.view is not None:
            return np.full(n, self.view, dtype=np.int64)
        return torch.randint(self.num_views, (n,)).numpy()

    def draw_other_views(self, first: np.ndarray) -> np.ndarray:
        """(n,) view indices each different from `first` (uniform over the other K - 1)."""
        shift = torch.randint(1, self.num_views, (len(first),)).numpy()
        return (first + shift) % self.num_views

    # ---- Dataset
    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.get_batch(torch.tensor([index]))
        return {key: value[0] for key, value in batch.items()}

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """LongTensor (B,) -> {"tokens": int64 (B, h, w), "labels": int64 (B,)} (+ "tokens_2" with
        pairs), one view drawn per item."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        rows, codes = indices.numpy(), self.open_codes()
        views = self.draw_views(len(rows))
        batch = {"tokens": torch.from_numpy(codes[rows, views].astype(np.int64)), "labels": self.labels[indices]}
        if self.pairs:
            batch["tokens_2"] = torch.from_numpy(codes[rows, self.draw_other_views(views)].astype(np.int64))
        return batch

    def __repr__(self) -> str:
        return (f"TokenCacheDataset({str(self.cache_dir)!r}, {len(self)} images x {self.view_names}, "
                f"grid {self.grid_size}, {self.codebook_size} codes)")


def cache_summary(cache_dir: str | Path) -> str:
    """One line describing a cache folder (used by `mimkit tokenize`)."""
    m = read_manifest(Path(cache_dir))
    size = sum(f["bytes"] for f in m["files"].values())
    h, w = m["grid_size"]
    return (f"wrote {cache_dir}: {m['num_images']} images x {m['num_views']} views ({', '.join(m['views'])}) "
            f"of {h}x{w} codes from {m['codebook_size']} ({m['dtype']}, {size / 2**20:.1f} MiB) "
            f"in {m['seconds']:.1f} s; tokenizer {m['tokenizer_fingerprint'][:12]}")


__all__ = ["Tokenizer", "build_token_cache", "TokenCacheDataset", "cache_summary", "code_dtype",
           "tokenizer_fingerprint", "FORMAT_VERSION"]
