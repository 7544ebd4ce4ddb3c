"""What loading a checkpoint into a model did: which keys were loaded, missing or ignored."""
from dataclasses import dataclass, field

from ..errors import CheckpointError


@dataclass
class LoadReport:
    """loaded: model keys filled from the checkpoint; missing: model keys the checkpoint lacks (left
    as initialised); unexpected: checkpoint keys the model has no place for (ignored); notes: other
    things worth knowing (e.g. an all-zero position table)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every model key was loaded and every checkpoint key was used."""
        return not self.missing and not self.unexpected

    def raise_if_incomplete(self, source: str = "checkpoint") -> None:
        if not self.complete:
            raise CheckpointError(f"{source} does not match the model: {self.summary()}")

    def summary(self, limit: int = 8) -> str:
        parts = [f"{len(self.loaded)} loaded"]
        for name, keys in (("missing", self.missing), ("unexpected (ignored)", self.unexpected)):
            if keys:
                shown = ", ".join(compress_keys(keys)[:limit])
                more = len(compress_keys(keys)) - limit
                parts.append(f"{len(keys)} {name}: {shown}" + (f", ... (+{more} groups)" if more > 0 else ""))
        return "; ".join(parts + self.notes)

    def __str__(self) -> str:
        return self.summary()


def report_converted(converted: dict, own: dict, source: str, hint: str, *, where: str = "in the checkpoint",
                     not_expected: tuple = ()) -> LoadReport:
    """Compare converted checkpoint tensors with the model's state dict `own`: CheckpointError naming
    the first key whose shape differs (`where` it has that shape, then `hint`: what to do), else the
    LoadReport (model keys in `not_expected` are not counted as missing)."""
    wrong = [k for k in converted if k in own and tuple(converted[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{source}: {k} has shape {tuple(converted[k].shape)} {where} but "
                              f"{tuple(own[k].shape)} in the model; {hint}")
    return LoadReport(loaded=[k for k in own if k in converted], unexpected=[k for k in converted if k not in own],
                      missing=[k for k in own if k not in converted and k not in not_expected])


def load_converted(model, converted: dict, report: LoadReport, source: str, strict: bool) -> None:
    """Copy `converted`'s report.loaded tensors into `model` (its other weights kept); first raise
    CheckpointError when a model key is missing or, with strict, a checkpoint key is unexpected."""
    if report.missing or (strict and report.unexpected):
        report.raise_if_incomplete(source)
    model.load_state_dict({**model.state_dict(), **{k: converted[k] for k in report.loaded}})


def compress_keys(keys: list[str]) -> list[str]:
    """Group keys by their first component: ['decoder_blocks.0.norm1.weight', ...] -> ['decoder_blocks.*', ...]
    when a group has several members; single keys stay as they are."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split(".", 1)[0], []).append(k)
    return [members[0] if len(members) == 1 else f"{head}.* ({len(members)})" for head, members in groups.items()]
