"""A pretrained model next to the same architecture at random init, over any evaluation protocol.

A probe number alone says little on small data: a random-init ViT already gives a non-trivial
linear / k-NN accuracy on MNIST-like images. The gain over random init is what pretraining bought.

A protocol (linear + k-NN probes, few-shot, fine-tuning, layer-wise) is a small object that knows
how to run once on one model with one pooling and how its table reads; `compare_with_random_init`
runs it on both models for every pool and `format_comparison_table` prints the rows:

    protocol = make_protocol("fewshot", shots=(1, 5), seeds=5)      # or FewShot(shots=(1, 5), seeds=5)
    rows = compare_with_random_init(model, random_init_like(model, config), protocol, train_set, test_set,
                                    method="mae", pools=("cls", "mean"))
    print(format_comparison_table(rows, protocol))

Both models get the same protocol options and seeds, so the gain is due to the weights alone; each
run extracts a model's features of each split once per pool (every row of that pool reuses them).
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Comparison:
    """One table row: a protocol's result for the pretrained and the random-init model, at one pool
    and one setting (few-shot: k images per class; layer-wise: the block; fine-tuning: the trainable
    blocks, None = all). Both results have `test_top1` (%)."""

    method: str
    pool: str
    setting: Any
    pretrained: Any
    random: Any

    @property
    def gain(self) -> float:
        """Test top-1 of pretrained minus random init, in points."""
        return self.pretrained.test_top1 - self.random.test_top1


class ProbeProtocol:
    """How one evaluation protocol runs on a model and how its comparison table reads.

    A subclass defines `run` (and `title`); by default a pool's results are told apart by
    `setting(result)` under the column `setting_column`, and a row reads
    setting | pretrained | random init | gain with `score_text` of each result. `check` fails
    early (before any slow work) on a model the protocol cannot evaluate with its options.
    A protocol whose rows are not `Comparison`s (FrozenProbes) overrides `row`, `columns` and `cells`."""

    setting_column = ""
    left_columns = 2
    default_pool = "cls"

    def check(self, model, method: str = "") -> None:
        """Raise (ConfigError, MimkitError) when `model` cannot be evaluated with these options."""

    def run(self, model, train_set, test_set, pool: str) -> list:
        """The protocol's results on one model with one pooling: one per table row of that pool."""
        raise NotImplementedError

    def title(self, rows: list) -> str:
        """The table's title line."""
        raise NotImplementedError

    def setting(self, result) -> Any:
        """What tells a result apart from the others of its pool (None when there is one per pool)."""
        return None

    def setting_text(self, setting) -> str:
        return str(setting)

    def score_text(self, result) -> str:
        return f"{result.test_top1:.2f}"

    def row(self, method: str, pool: str, pretrained, random):
        """One table row from the pretrained and the random-init result of the same setting."""
        return Comparison(method, pool, self.setting(pretrained), pretrained, random)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns after method and pool."""
        return self.setting_column, "pretrained", "random init", "gain"

    def cells(self, row) -> list[str]:
        """The row's cells under `columns`."""
        return [self.setting_text(row.setting), self.score_text(row.pretrained), self.score_text(row.random),
                f"{row.gain:+.2f}"]


def compare_with_random_init(pretrained, random_init, protocol: ProbeProtocol, train_set, test_set, *,
                             method: str = "", pools: str | Sequence[str] | None = None) -> list:
    """Rows per pool (in the order of `pools`, default the protocol's own) then per setting.

    protocol: a ProbeProtocol, e.g. `mimkit.eval.protocols.make_protocol("probes")`. The caller builds
    `random_init` as the same architecture as `pretrained`, freshly initialised (`random_init_like`).
    """
    pools = (protocol.default_pool,) if pools is None else (pools,) if isinstance(pools, str) else tuple(pools)
    protocol.check(pretrained, method)  # fail before the slow work
    rows = []
    for pool in pools:
        pre, rnd = (protocol.run(model, train_set, test_set, pool) for model in (pretrained, random_init))
        rows += [protocol.row(method, pool, a, b) for a, b in zip(pre, rnd)]
    return rows


def format_comparison_table(rows: list, protocol: ProbeProtocol) -> str:
    """Plain-text table: title, then method | pool | the protocol's columns, one line per row."""
    body = [[r.method or "-", r.pool, *protocol.cells(r)] for r in rows]
    return text_table(protocol.title(rows), ["method", "pool", *protocol.columns], body, protocol.left_columns)


def text_table(title: str, header: list[str], body: list[list[str]], left_columns: int = 2) -> str:
    """title, header, a rule and body rows; the first `left_columns` columns left-aligned, the rest right."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line):
        cells = [c.ljust(w) if i < left_columns else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([title, fmt(header), rule, *map(fmt, body)])


def number(value: float | None, spec: str = ".2f") -> str:
    """A table cell: "-" for None, else the number in `spec`."""
    return "-" if value is None else format(value, spec)
