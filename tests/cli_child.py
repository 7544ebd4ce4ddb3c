"""The body of a forked child process that runs the mimkit CLI (used by the crash-safety and
distributed tests): not a test module itself."""
import os
import sys

from mimkit.cli import main


def run_cli(argv: list[str], env: dict[str, str]) -> None:
    """Child process body: `mimkit ARGV` with extra environment variables, output silenced."""
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.exit(main(argv))
