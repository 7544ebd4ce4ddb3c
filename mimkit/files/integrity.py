"""Checkpoint integrity: sha256 checksums recorded when files are saved and verified when they are
read, and the refusal of weights that are not finite.

A folder's checksums live in `checksums.sha256` in the format of coreutils' `sha256sum`
("<64 hex digits>  <file name>" per line), so `sha256sum -c checksums.sha256` checks a folder by
hand too. A file with no line there (or a folder without the file: checkpoints of older versions)
is read unverified. Mismatches and NaN/inf weights are CheckpointErrors naming the file and what
to do, since loading either would give a model that silently computes garbage.
"""
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from ..errors import CheckpointError

CHECKSUM_FILE = "checksums.sha256"
READ_CHUNK_BYTES = 1 << 20
FINITE_CHUNK_ELEMENTS = 1 << 24  # bounds the temporary bool mask of the NaN/inf count
SHOWN_KEYS = 3
CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # text (" ") or binary ("*") mode


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in chunks (weights files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: str | Path, names: Iterable[str]) -> Path:
    """Write `folder`/checksums.sha256 covering the files `names` of `folder` (those that exist).
    Returns its path."""
    folder = Path(folder)
    lines = [f"{file_sha256(folder / name)}  {name}\n" for name in names if (folder / name).is_file()]
    path = folder / CHECKSUM_FILE
    path.write_text("".join(lines))
    return path


def recorded_checksum(file: Path) -> str | None:
    """The sha256 that the checksums.sha256 beside `file` records for it (None when the folder has
    no such file or it does not list `file`); CheckpointError when it cannot be read or parsed."""
    listing = file.parent / CHECKSUM_FILE
    if not listing.is_file():
        return None
    try:
        text = listing.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {listing}: {err}; restore it, or delete it to load "
                              f"{file} unverified") from None
    recorded = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = CHECKSUM_LINE.match(line)
        if match is None:
            raise CheckpointError(f"cannot read {listing}: line {number} is not '<sha256>  <file name>'; restore "
                                  f"it, or delete it to load {file} unverified")
        if match.group(2) == file.name:
            recorded = match.group(1).lower()
    return recorded


def verify_checksum(file: str | Path, remedy: str = "restore it from a backup or copy it again") -> None:
    """CheckpointError when `file`'s sha256 differs from the one its folder's checksums.sha256
    records; nothing when they agree or none is recorded. `remedy`: what the message tells to do."""
    file = Path(file)
    expected = recorded_checksum(file)
    if expected is None:
        return
    try:
        actual = file_sha256(file)
    except OSError as err:
        raise CheckpointError(f"cannot read {file}: {err.strerror or err}") from None
    if actual != expected:
        raise CheckpointError(f"cannot read {file}: it is corrupt (its sha256 differs from the one recorded in "
                              f"{CHECKSUM_FILE} when it was saved); {remedy}")


def nonfinite_count(tensor: torch.Tensor) -> int:
    """How many NaN/inf values a tensor holds (0 for integer and bool tensors)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    count = 0
    for chunk in tensor.detach().reshape(-1).split(FINITE_CHUNK_ELEMENTS):
        if chunk.element_size() == 1:  # float8: isfinite is not implemented for it
            chunk = chunk.float()
        count += int((~torch.isfinite(chunk)).sum())
    return count


def check_finite(state: dict[str, torch.Tensor], source: str | Path,
                 remedy: str = "restore the file or use another checkpoint") -> None:
    """CheckpointError naming `source` and the first keys of `state` whose tensors hold NaN or inf
    (with their counts); nothing when every floating tensor is finite."""
    bad = {key: n for key, tensor in state.items() if (n := nonfinite_count(tensor))}
    if not bad:
        return
    shown = ", ".join(f"{key} ({n} NaN/inf)" for key, n in list(bad.items())[:SHOWN_KEYS])
    more = f" and {len(bad) - SHOWN_KEYS} more tensors" if len(bad) > SHOWN_KEYS else ""
    raise CheckpointError(f"{source} holds non-finite weights: {shown}{more}; a model with them computes "
                          f"nothing meaningful (the file is damaged or training diverged before it was saved); "
                          f"{remedy}")
