"""The run folder around the training loop: checked before anything is written, never trained
over by accident, and the list of images a run skipped."""
import os
from pathlib import Path

from ..errors import ConfigError
from .checkpoint import discard
from ..files.checkpoint_folder import latest_checkpoint
from ..files.atomic import write_text_atomic

SKIPPED_FILE = "skipped_images.txt"  # RUN/skipped_images.txt: unreadable images skipped (data.on_error=skip)


def check_writable_dir(path: str | os.PathLike, key: str) -> None:
    """ConfigError naming `key` and `path` unless `path` is (or can be made) a writable folder.

    Creates nothing: it looks at `path` or, when it does not exist yet, its nearest existing
    ancestor, which must be a writable folder.
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{key}={path} is a file, not a folder; choose another {key}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}={path} is not writable; choose another {key} or fix its permissions")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {ancestor} is a file; choose another {key}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path} cannot be created: {ancestor} is not writable; choose another {key}")


def refuse_or_clear_old_run(run_dir: Path, overwrite: bool) -> None:
    """Before a fresh (not resumed) run: ConfigError when `run_dir` already holds checkpoints, or
    with `overwrite` remove them (renamed away first, like any checkpoint deletion)."""
    old = latest_checkpoint(run_dir)
    if old is None:
        return
    if not overwrite:
        raise ConfigError(f"train.out_dir={run_dir} already holds a run (checkpoint {old.name}); "
                          "continue it with --resume, choose another train.out_dir, "
                          "or set train.overwrite=true to replace it")
    discard(Path(run_dir) / "checkpoints")


def write_skipped(run_dir: Path, skipped: list[str], resumed: bool) -> None:
    """List every distinct skipped image file in RUN/skipped_images.txt; a resumed run adds to the
    list, a fresh one replaces it (or removes a stale one when it skipped nothing)."""
    path = Path(run_dir) / SKIPPED_FILE
    old = path.read_text().splitlines() if resumed and path.is_file() else []
    if not skipped:
        if not resumed and path.exists():
            path.unlink()
        return
    write_text_atomic(path, "\n".join(dict.fromkeys(old + skipped)) + "\n")
