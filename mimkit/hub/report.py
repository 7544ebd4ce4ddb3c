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


def compress_keys(keys: list[str]) -> list[str]:
    """Group keys by their first component: ['decoder_blocks.0.norm1.weight', ...] -> ['decoder_blocks.*', ...]
    when a group has several members; single keys stay as they are."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split(".", 1)[0], []).append(k)
    return [members[0] if len(members) == 1 else f"{head}.* ({len(members)})" for head, members in groups.items()]
