"""One module per `mimkit` sub-command, each with `register(subparsers)` that adds its parser and
sets `func` to the function that runs it. The CLI lists them in COMMANDS (in --help order)."""
from . import convert, evaluate, generate, presets, reconstruct, repro, tokenize, train

COMMANDS = [presets, train, reconstruct, evaluate, tokenize, generate, convert, repro]
