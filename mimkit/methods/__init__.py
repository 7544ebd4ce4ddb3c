"""Floor 3: one module per seed system. Each is a `Method` (methods/base.py: the contract) built
from its config dataclass, with `forward(**batch) -> Output` (loss + logs) and
`features(images, pool) -> (N, D)` for probes. The table of methods is mimkit.registry.

This package's __init__ imports only the contract (base, output), so lower floors (tokenizers)
can subclass Method without importing any method."""
from .base import Method
from .output import Output

__all__ = ["Method", "Output"]
