"""WebDataset-style tar shards, streamed with the standard library's `tarfile`.

    data.name=/data/train-{000000..000127}.tar      (brace range, zero-padded like the files)
    data.name=/data/train_shards                    (a folder whose *.tar files are the shards)

A shard holds samples as consecutive members sharing a key (the name up to the first dot):
`000123.png` (or .jpg/.jpeg/.webp/...: the image) and optionally `000123.cls` (its integer
label, as text). Each epoch the shard order is shuffled (same on every rank), the shards are
split over (rank, DataLoader worker) - whole shards when there are at least as many as readers,
else every reader streams all shards and keeps every n-th sample - and the samples pass through
a shuffle buffer seeded by (seed, epoch, reader). `StreamLoader` batches them forever, with a
resumable (epoch, batches yielded) position: resuming re-reads the epoch up to that point.
Images become uint8 items exactly as an image folder's (mimkit.data.image_items): the training
crops of the sample with index i (its place in file order over all shards) in epoch e are drawn
from (seed, e, i), so a shard and a folder of the same images in the same order crop alike.
"""
import io
import random
import re
import tarfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError
from .collate import SkippedItem, collate_skipping
from .decode import MAX_PIXELS
from .folder import IMAGE_EXTENSIONS
from .image_items import ImageItems
from .image_views import CropRecipe
from .permutation import epoch_permutation

LABEL_EXTENSIONS = (".cls", ".label", ".target")
BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(name: str) -> list[str] | None:
    """Shard files named by `name` (brace pattern, .tar file or folder of .tar), or None when
    `name` names no shards. DataError when a brace pattern names missing files."""
    match = BRACES.search(name)
    if match:
        lo, hi = match.group(1), match.group(2)
        width = len(lo)
        files = [name[:match.start()] + str(i).zfill(width) + name[match.end():] for i in range(int(lo), int(hi) + 1)]
        missing = [f for f in files if not Path(f).expanduser().is_file()]
        if missing:
            raise DataError(f"data.name={name}: {len(missing)} of {len(files)} shards do not exist, e.g. {missing[0]}")
        return [str(Path(f).expanduser()) for f in files]
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".tar":
        return [str(path)]
    if path.is_dir():
        tars = sorted(str(p) for p in path.glob("*.tar"))
        return tars or None
    return None


def split_key(member_name: str) -> tuple[str, str]:
    """'dir/000123.seg.png' -> ('dir/000123', '.seg.png'): key up to the first dot of the file name."""
    folder, _, base = member_name.rpartition("/")
    stem, dot, rest = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (dot + rest).lower()


def read_samples(shard: str):
    """Yield (key, {extension: bytes}) for each sample of one tar shard, in file order."""
    try:
        archive = tarfile.open(shard, mode="r|*")  # a stream: no seeking, works on pipes too
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"cannot open shard {shard}: {err}") from None
    key, parts = None, {}
    with archive:
        try:
            for member in archive:
                if not member.isfile():
                    continue
                k, ext = split_key(member.name)
                if k != key and parts:
                    yield key, parts
                    parts = {}
                key = k
                parts[ext] = archive.extractfile(member).read()
        except tarfile.TarError as err:
            raise DataError(f"shard {shard} is corrupt ({err}); re-write it or remove it from data.name") from None
    if parts:
        yield key, parts


def count_samples(shard: str) -> int:
    """Samples in one shard, from the tar headers (a seekable read skips the members' bytes)."""
    count, key = 0, None
    try:
        with tarfile.open(shard, mode="r:*") as archive:
            for member in archive:
                if member.isfile():
                    k = split_key(member.name)[0]
                    count, key = count + (k != key), k
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"cannot read shard {shard}: {err}; re-write it or remove it from data.name") from None
    return count


class NamedBytes(io.BytesIO):
    """Bytes of one tar member that print as shard:member in error messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


class TarShards(ImageItems, IterableDataset):
    """Streams {"images": uint8 (channels, S, S), "labels": int64 0-d (-1 = none)} (plus
    "images_2" when views == 2) from tar shards; see the module docstring for shuffling and
    splitting. set_epoch(e) before iterating chooses the epoch's order and crops. augment / recipe /
    views: the training crops of mimkit.data.image_items (else the evaluation view)."""

    def __init__(self, shards: list[str], channels: int, image_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 1000, on_error: str = "raise",
                 max_pixels: int = MAX_PIXELS, min_side: int = 1, augment: bool = False,
                 recipe: CropRecipe = CropRecipe(), views: int = 1):
        if not shards:
            raise DataError("no tar shards given")
        self.init_items(channels, image_size, augment, recipe, views, max_pixels, min_side)
        self.shards = list(shards)
        self.seed, self.rank, self.world_size, self.shuffle_buffer = seed, rank, world_size, shuffle_buffer
        self.on_error = on_error
        self._offsets = None
        self.source = self.shards[0] if len(self.shards) == 1 else f"{self.shards[0]} (+{len(self.shards) - 1})"

    def offsets(self) -> dict[str, int]:
        """shard -> the file-order index of its first sample (counted once, from the tar headers)."""
        if self._offsets is None:
            counts = [count_samples(shard) for shard in self.shards]
            starts = [sum(counts[:i]) for i in range(len(counts))]
            self._offsets, self._count = dict(zip(self.shards, starts)), sum(counts)
        return self._offsets

    def reader(self) -> tuple[int, int]:
        """(index, count) of this (rank, worker) among all readers."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def my_stream(self):
        """This reader's (shard, key, parts, file-order index) of the epoch, before the shuffle buffer."""
        index, count = self.reader()
        offsets = self.offsets()
        order = [self.shards[i] for i in epoch_permutation(len(self.shards), self.seed, self.epoch).tolist()]
        if len(order) >= count:
            for shard in order[index::count]:
                for i, (key, parts) in enumerate(read_samples(shard)):
                    yield shard, key, parts, offsets[shard] + i
            return
        position = 0
        for shard in order:
            for i, (key, parts) in enumerate(read_samples(shard)):
                if position % count == index:
                    yield shard, key, parts, offsets[shard] + i
                position += 1

    def __iter__(self):
        index, count = self.reader()
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}-{count}")
        buffer = []
        for sample in self.my_stream():
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            slot = rng.randrange(len(buffer))
            buffer[slot], sample = sample, buffer[slot]
            yield self.decode(*sample)
        rng.shuffle(buffer)
        for sample in buffer:
            yield self.decode(*sample)

    def decode(self, shard: str, key: str, parts: dict[str, bytes], index: int):
        name = f"{shard}:{key}"
        image = next((ext for ext in parts if ext.endswith(IMAGE_EXTENSIONS)), None)
        if image is None:
            raise DataError(f"sample {name} has no image member (found {sorted(parts)}; expected one of "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        label_ext = next((ext for ext in parts if ext in LABEL_EXTENSIONS), None)
        try:
            label = int(parts[label_ext].decode().strip()) if label_ext else -1
        except ValueError:
            raise DataError(f"sample {name}{label_ext} is not an integer label") from None
        try:
            item = self.item_views(NamedBytes(parts[image], name + image), name + image, self.epoch, index)
        except DataError:
            raise
        except Exception as err:  # PIL raises many types
            if self.on_error == "skip":
                return SkippedItem(name + image)
            raise DataError(f"cannot read image {name}{image}: {str(err).splitlines()[0] if str(err) else err}; "
                            "fix the shard or set data.on_error=skip") from None
        item["labels"] = torch.tensor(label, dtype=torch.long)
        return item

    def __getitem__(self, index: int):
        """The index-th sample in file order (for previews such as reconstruction pictures)."""
        seen = 0
        for shard in self.shards:
            for key, parts in read_samples(shard):
                if seen == index:
                    return self.decode(shard, key, parts, index)
                seen += 1
        raise IndexError(index)

    def __len__(self) -> int:
        """Samples in all shards (counted once by reading the tar headers)."""
        self.offsets()
        return self._count


class StreamLoader:
    """ResumableLoader's interface over a TarShards stream: batches forever, epoch after epoch.

    An epoch ends when this rank's share runs out (ranks may differ by a batch: the stream goes on
    into the next epoch, so every rank still yields one batch per step). drop_last=True keeps
    batches whole. state_dict() = {"epoch", "position"}; load_state_dict() skips `position`
    batches of the saved epoch when iterating resumes. Each epoch is a fresh DataLoader (its
    workers start with that epoch's order and crops); pin_memory for a CUDA device, and
    `prefetch_factor` batches per worker read ahead.
    """

    def __init__(self, dataset: TarShards, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int = 4):
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.epoch, self.position = 0, 0
        self.skipped_count, self.skipped_paths = 0, []
        self._batches = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = None

    def __iter__(self) -> "StreamLoader":
        return self

    def open_epoch(self):
        self.dataset.set_epoch(self.epoch)
        self.dataset.offsets()  # counted here once, not in every worker
        loader = DataLoader(self.dataset, batch_size=self.batch_size, drop_last=True, num_workers=self.num_workers,
                            collate_fn=collate_skipping, pin_memory=self.pin_memory,
                            prefetch_factor=self.prefetch_factor if self.num_workers else None)
        batches = iter(loader)
        for _ in range(self.position):  # resume: the batches already trained on
            next(batches)
        return batches

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            if self._batches is None:
                self._batches = self.open_epoch()
            try:
                batch, skipped = next(self._batches)
            except StopIteration:
                if self.position == 0:
                    raise DataError(f"the shards {self.dataset.source} give this process (rank "
                                    f"{self.dataset.rank} of {self.dataset.world_size}) not one batch of "
                                    f"{self.batch_size}; lower train.batch_size or add shards") from None
                self.epoch, self.position, self._batches = self.epoch + 1, 0, None
                continue
            self.position += 1
            self.skipped_count += len(skipped)
            self.skipped_paths += [p for p in skipped if p not in self.skipped_paths]
            if batch is not None:
                return batch
