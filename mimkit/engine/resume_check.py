"""The rules of `--resume`: a run continues only from a resumable checkpoint, only when steps are
left to train, and only with the recipe it was started with, unless the user names the keys that
may change; those changes are then recorded in every later checkpoint's config.json.

Keys compared: every key of the run config (config.json), flattened to dotted names
("optim.blr", "model.tokenizer_config.model.codebook_size"), except FREE_KEYS, which do not change
what the run computes (where it writes, how often it logs, checkpoints or draws, how it shows
progress, how many threads/workers load the data, on which device or whether compiled, how it
treats unreadable files or long non-finite streaks). train.steps is part of the recipe: it shapes
the cosine schedule, so extending a run needs `--allow-change train.steps`.

Fields filled in at run start (FILLED_FIELDS) are not user changes: left empty in the new config,
they take the saved values (`fill_from_saved`) before anything is compared or built.

The record: config.json of a resumed run holds the run's current config plus
    "resumed_changes": [{"step": 500, "key": "optim.blr", "before": 0.001, "after": 0.01}, ...]
accumulated over resumes; key "peak_lr" records a change of the computed peak learning rate
(blr * effective batch / 256, so also a change of the number of processes).
"""
import math
from pathlib import Path

from ..config_schema import from_dict, to_dict
from ..registry import RESUMED_CHANGES, RunConfig, run_config_from_dict
from ..errors import CheckpointError, ConfigError
from ..files.checkpoint_folder import latest_checkpoint

FREE_KEYS = frozenset({
    "train.out_dir", "train.progress", "train.threads", "train.log_every", "train.ckpt_every",
    "train.keep_checkpoints", "train.picture_every", "train.overwrite", "train.max_nonfinite_steps",
    "train.device", "train.compile", "data.num_workers", "data.on_error",
})
LR_KEYS = ("optim.blr", "optim.lr", "train.batch_size", "train.accum_steps")  # what the peak lr is made of
FILLED_FIELDS = ("tokenizer_config", "teacher_dim", "pixel_mean", "pixel_std")  # model fields filled at run start


def resumable_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint `--resume` continues (the latest with its trainer state); ConfigError when none."""
    ckpt = latest_checkpoint(run_dir, need_state=True)
    if ckpt is None:
        what = "does not exist" if not Path(run_dir).exists() else "holds no resumable checkpoint"
        raise ConfigError(f"cannot resume: train.out_dir={run_dir} {what}; drop --resume to start a fresh run")
    return ckpt


def nothing_to_do(run_dir: str | Path, step: int, steps: int) -> str:
    return (f"nothing to do: {run_dir} is at step {step} of train.steps={steps}; "
            "raise train.steps (with --allow-change train.steps) to train further")


def fill_from_saved(config: RunConfig, saved: dict) -> RunConfig:
    """`config` with each FILLED_FIELDS field it leaves empty taken from the saved config.json."""
    theirs = saved.get("model") or {}
    fill = {name: theirs[name] for name in FILLED_FIELDS
            if hasattr(config.model, name) and not getattr(config.model, name) and theirs.get(name)}
    if not fill:
        return config
    model = from_dict(type(config.model), {**to_dict(config.model), **fill}, "model")
    return RunConfig(config.method, model, config.data, config.optim, config.train)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def allowed_keys(allow_change: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The keys of `--allow-change`: a string or strings of comma-separated keys."""
    texts = [allow_change] if isinstance(allow_change, str) else list(allow_change)
    return tuple(key.strip() for text in texts for key in text.split(",") if key.strip())


def is_allowed(key: str, allowed) -> bool:
    """Whether `key` is one of `allowed` or lies under one (`model.tokenizer_config` allows its keys)."""
    return any(key == name or key.startswith(name + ".") for name in allowed)


def saved_recipe(saved: dict, ckpt: Path) -> dict:
    """The saved config.json as the flat dict of a RunConfig (keys added since it was written get
    their defaults, as when the checkpoint is loaded)."""
    try:
        config = run_config_from_dict(saved)
    except ConfigError as err:
        raise CheckpointError(f"cannot resume from {ckpt}: its config.json does not load: {err}") from None
    return flatten(to_dict(config))


def check_recipe(saved: dict, config: RunConfig, allow_change, step: int, ckpt: Path) -> list[dict]:
    """The records of the allowed changes between the saved config.json and `config`; ConfigError
    listing every other changed key of the recipe (outside FREE_KEYS), or an unknown allowed key."""
    before, after = saved_recipe(saved, ckpt), flatten(to_dict(config))
    unknown = [name for name in allow_change if not any(is_allowed(key, [name]) for key in after)]
    if unknown:
        raise ConfigError(f"--allow-change {unknown[0]}: no such config key (e.g. optim.blr, train.steps)")
    changed = sorted(key for key in before.keys() | after.keys()
                     if key not in FREE_KEYS and before.get(key) != after.get(key))
    refused = [key for key in changed if not is_allowed(key, allow_change)]
    if refused:
        listed = ", ".join(f"{key}={before.get(key)!r} there, {after.get(key)!r} here" for key in refused)
        raise ConfigError(f"cannot resume from {ckpt}: this run's recipe differs from the checkpoint's: {listed}; "
                          f"resume with the saved values, or accept the change with --allow-change "
                          f"{','.join(refused)} (it is recorded in config.json)")
    return [change_record(step, key, before.get(key), after.get(key)) for key in changed]


def check_peak_lr(saved_lr: float, peak_lr: float, effective_batch: int, world_size: int, allow_change,
                  step: int, ckpt: Path) -> list[dict]:
    """[] when the peak learning rate is the saved one, else its change record when a key that makes
    it (LR_KEYS) may change; ConfigError otherwise (e.g. another number of processes)."""
    if math.isclose(saved_lr, peak_lr, rel_tol=1e-9):
        return []
    if not any(is_allowed(key, allow_change) for key in LR_KEYS):
        raise ConfigError(f"cannot resume from {ckpt}: its peak learning rate was {saved_lr:.6g}, this run's is "
                          f"{peak_lr:.6g} (effective batch {effective_batch} = train.batch_size x "
                          f"train.accum_steps x {world_size} process(es)); resume with the same number of "
                          f"processes, or accept the change with --allow-change naming one of {', '.join(LR_KEYS)}")
    return [change_record(step, "peak_lr", saved_lr, peak_lr)]


def change_record(step: int, key: str, before, after) -> dict:
    return {"step": step, "key": key, "before": before, "after": after}


def recorded_changes(saved: dict) -> list[dict]:
    """The change records a saved config.json already holds (from earlier resumes)."""
    return list(saved.get(RESUMED_CHANGES) or [])
