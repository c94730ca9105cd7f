"""What every command line shares: flag parsing with one `error:` line, the console, the `main` tail.

A command module defines `define_flags()` (flags are defined only when the module is the program)
and `main(argv)`, and ends with

    run = cli.program(main, define_flags)  # the console script's entry point

    if __name__ == "__main__":
        run()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from saol_jax.core import faults, paths


def parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """absl flag parsing for the command lines: a bad flag, recipe option or `--config.*` override
    ends the program with one `error:` line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        message = str(error)
        if "Traceback (most recent call last)" in message:  # config_flags quotes the recipe's traceback
            lines = [line for line in message.splitlines() if line.strip()]
            message = f"{lines[0].rstrip(': ')}: {lines[-1]}"
        raise SystemExit(f"error: {message}\nPass --helpfull to see the flags.") from None
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        raise SystemExit(f"error: bad --config override: {message}") from None


def program(main: Callable[[list[str]], None], define_flags: Callable[[], None] | None = None) -> Callable[[], None]:
    """The command's entry point: defines its flags, parses `sys.argv` with `parse_flags_or_exit`, runs `main`."""

    def run() -> None:
        if define_flags is not None:
            define_flags()
        app.run(main, flags_parser=parse_flags_or_exit)

    return run


def define_run_flags(out_help: str, workdir_help: str = "A training run's workdir.") -> None:
    """`--workdir` (required: the trained run a command reads) and `--out` (where its output goes)."""
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.DEFINE_string("out", None, out_help)
    flags.mark_flag_as_required("workdir")


def arguments(argv: list[str]) -> flags.FlagValues:
    """The parsed flags; a stray positional argument is a usage error (`predict` reads its own)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    return flags.FLAGS


def configure_console() -> None:
    """Log records to the console as `faults.configure_console` routes them, at `--verbosity`."""
    faults.configure_console(flags.FLAGS.verbosity)


def write_report(out: str, payload: Any, text: str) -> None:
    """Writes `payload` as JSON to `out`, prints `text` for the console and where the file went."""
    paths.write_json(out, payload)
    print(text)
    print(f"wrote {out}")
