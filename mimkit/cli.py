"""The `mimkit` command: it only parses arguments into configs and calls the library.

    mimkit presets
    mimkit train PRESET_OR_YAML [key=value ...] [--resume]
    mimkit reconstruct CKPT --data fashion-mnist --out grid.png
    mimkit eval linear|knn|probes CKPT --data fashion-mnist

Each sub-command lives in mimkit/commands/. Errors a user can cause (MimkitError) print one line
and exit with status 2; anything else is a bug and keeps its traceback.
"""
import argparse
import sys

from .errors import MimkitError


def build_parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = argparse.ArgumentParser(prog="mimkit", description="Masked image modeling: train, picture, evaluate.",
                                     epilog="Run `mimkit COMMAND --help` for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MimkitError as err:
        print(f"mimkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
