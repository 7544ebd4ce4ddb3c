"""The `mimkit` command: it only parses arguments into configs and calls the library.

    mimkit presets
    mimkit train PRESET_OR_YAML [key=value ...] [--resume]
    mimkit reconstruct CKPT --data fashion-mnist --out grid.png
    mimkit eval linear|knn|probes|tokenizer CKPT --data fashion-mnist
    mimkit eval generation CKPT --feature-net CLASSIFIER_CKPT --steps 1,12 --cas
    mimkit tokenize TOKENIZER_CKPT --data fashion-mnist --crops 2 --out CACHE
    mimkit generate|inpaint|outpaint|edit CKPT ... --out grid.png

Each sub-command lives in mimkit/commands/. Errors a user can cause (MimkitError, and argparse's
usage errors) print one line and exit with status 2; anything else is a bug and keeps its traceback.
"""
import argparse
import sys

from .errors import MimkitError


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (no usage block); sub-parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """A message on one line: its lines joined with '; ', other control characters (which may
    come from the user's own arguments) escaped."""
    text = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in message)
    return "; ".join(line.strip() for line in text.split("\n") if line.strip())


def build_parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = OneLineParser(prog="mimkit", description="Masked image modeling: train, picture, evaluate.",
                                     epilog="Run `mimkit COMMAND --help` for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def set_threads(threads: int) -> None:
    """--threads N (every command that computes has it): torch's CPU threads; 0 keeps torch's default."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`mimkit train P --out D a=1`): argparse stops a
    # positional list at the first option, so collect the stragglers here
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *(e for e in extra if "=" in e and not e.startswith("-"))]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        set_threads(getattr(args, "threads", 0))
        args.func(args)
    except MimkitError as err:
        print(f"mimkit: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
