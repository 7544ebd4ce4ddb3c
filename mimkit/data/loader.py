"""An infinite, resumable batch iterator over epochs, shardable across ranks."""
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .collate import collate_skipping
from .permutation import epoch_permutation
from .shards import StreamLoader, TarShards


class ResumableLoader:
    """Yields batch dicts ({"images": (B, C, S, S), "labels": (B,)}) forever, epoch after epoch.

    Epoch e visits the dataset in `epoch_permutation(len, seed, e)` order (its own generator, so
    the global RNG is untouched). With world_size > 1 the permutation is cut to a multiple of
    world_size and rank r takes every world_size-th index from r on, so ranks never overlap and
    all have the same number of batches. drop_last=False keeps a short last batch per epoch.

    state_dict() = {"epoch", "position"} (batches already yielded in that epoch);
    load_state_dict() makes the next batches exactly those the uninterrupted loader would yield.

    Datasets with `get_batch(indices)` (in memory) are indexed directly in this process; others go
    through one DataLoader (num_workers workers) whose batch sampler runs from the saved position
    through every later epoch, so the workers live across epochs (persistent, `prefetch_factor`
    batches each read ahead; pin_memory for a CUDA device). Datasets that draw their own crops
    (`epoch_keys`, mimkit.data.image_items) get (epoch, index) keys, which carry the epoch into
    workers that started in an earlier one.
    Unreadable images skipped by the dataset (SkippedItem) are dropped from their batch, which is
    then shorter (a batch with nothing left is passed over); `skipped_paths` lists each distinct
    path once, in the order first met (the trainer logs and saves their number), and
    `skipped_count` counts the skipped reads (a file met in two epochs counts twice).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, drop_last: bool = True,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 prefetch_factor: int = 4):
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size > 0 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.dataset, self.batch_size, self.seed, self.drop_last = dataset, batch_size, seed, drop_last
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.per_rank = len(dataset) // world_size
        if self.batches_per_epoch == 0:
            raise DataError(f"the dataset has {len(dataset)} images, too few for one batch of {batch_size} "
                            f"on each of {world_size} process(es); lower train.batch_size or add data")
        self.epoch, self.position = 0, 0
        self.skipped_count = 0
        self.skipped_paths: list[str] = []
        self._seen_skipped: set[str] = set()
        self._batches = None  # iterator over the rest of the current epoch
        self._empty_run = 0  # consecutive batches whose every item was skipped

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's index batches of `epoch`, each a LongTensor (B,)."""
        order = epoch_permutation(len(self.dataset), self.seed, epoch)
        mine = order[: self.per_rank * self.world_size][self.rank::self.world_size]
        return list(mine.split(self.batch_size))[: self.batches_per_epoch]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position >= self.batches_per_epoch:  # saved right at the end of an epoch
            self.epoch, self.position = self.epoch + self.position // self.batches_per_epoch, 0
        self._batches = None

    def __iter__(self) -> "ResumableLoader":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            if self._batches is None:
                self._batches = self.open_epoch()
            try:
                batch = next(self._batches)
            except StopIteration:  # an in-memory epoch's end (the worker stream never ends)
                self._batches = self.open_epoch()
                continue
            self.position += 1
            if self.position == self.batches_per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            if batch is not None:
                self._empty_run = 0
                return batch
            self._empty_run += 1
            if self._empty_run >= self.batches_per_epoch:  # a whole epoch of skipped files
                raise DataError(f"every image was skipped as unreadable ({len(self.skipped_paths)} files, "
                                f"e.g. {self.skipped_paths[0]}); check the data")

    def open_epoch(self):
        """An iterator over batches from (epoch, position) on (None for an all-skipped batch): the
        rest of the epoch for an in-memory dataset, all later epochs too through a DataLoader."""
        set_epoch = getattr(self.dataset, "set_epoch", None)  # datasets drawing their own augmentation
        if set_epoch is not None:
            set_epoch(self.epoch)
        get_batch = getattr(self.dataset, "get_batch", None)
        if get_batch is not None:
            return (get_batch(indices) for indices in self.epoch_batches(self.epoch)[self.position:])
        workers = self.num_workers > 0
        # its own generator: starting the DataLoader draws a worker base seed, which must not come from
        # the global RNG (a resumed run starts one more DataLoader than the uninterrupted run did)
        loader = DataLoader(self.dataset, batch_sampler=self.key_batches(self.epoch, self.position),
                            num_workers=self.num_workers, collate_fn=collate_skipping, pin_memory=self.pin_memory,
                            persistent_workers=workers, prefetch_factor=self.prefetch_factor if workers else None,
                            generator=torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch))
        return (self.count_skipped(*pair) for pair in loader)

    def key_batches(self, epoch: int, position: int):
        """Dataset keys batch by batch, from batch `position` of `epoch` on, forever: indices, or
        (epoch, index) pairs for datasets with `epoch_keys`."""
        tagged = getattr(self.dataset, "epoch_keys", False)
        while True:
            for indices in self.epoch_batches(epoch)[position:]:
                yield [(epoch, i) for i in indices.tolist()] if tagged else indices.tolist()
            epoch, position = epoch + 1, 0

    def count_skipped(self, batch: dict[str, torch.Tensor] | None, skipped: list[str]):
        self.skipped_count += len(skipped)
        for path in skipped:
            if path not in self._seen_skipped:
                self._seen_skipped.add(path)
                self.skipped_paths.append(path)
        return batch


def make_loader(dataset, batch_size: int, seed: int = 0, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                pin_memory: bool = False):
    """The batch iterator for `dataset`: a ResumableLoader over a map-style dataset, or a
    StreamLoader over tar shards (which then learn this process's rank and the run's seed).
    pin_memory: batches from workers land in page-locked memory (for a CUDA device)."""
    if isinstance(dataset, TarShards):
        dataset.seed, dataset.rank, dataset.world_size = seed, rank, world_size
        return StreamLoader(dataset, batch_size, num_workers=num_workers, pin_memory=pin_memory)
    if hasattr(dataset, "set_epoch"):  # a dataset drawing its own augmentation: seeded by the run
        dataset.seed = seed
    return ResumableLoader(dataset, batch_size, seed=seed, num_workers=num_workers, rank=rank, world_size=world_size,
                           pin_memory=pin_memory)
