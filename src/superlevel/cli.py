"""The ``superlevel`` command.

Sub-commands are contributed by the sub-packages (``bench``, ``landscape``, ``data``):
each exposes ``add_subparser(subparsers)`` and sets ``func`` on its parser. They are
imported on demand so a missing optional extra only breaks the command that needs it.

Two things hold for every sub-command, so they are done here once: output to a closed
pipe (``superlevel data list | head -1``) ends the command quietly with exit status 141,
as for a program killed by ``SIGPIPE``; and a path that is not valid UTF-8 (a file name
of another encoding) is printed with backslash escapes instead of raising
``UnicodeEncodeError`` (stderr's own convention, applied to stdout).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# (command, module providing add_subparser)
_COMMANDS = [
    ("demo", "superlevel.demo"),
    ("bench", "superlevel.bench.cli"),
    ("landscape", "superlevel.landscape.cli"),
    ("data", "superlevel.data.cli"),
    ("study", "superlevel.study.cli"),
]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="superlevel",
        description="Super-level-set SGD: optimizer, stability and landscape tools, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only hide the sub-command when its own module is absent, never a broken import.
            if exc.name != module_name:
                raise
            continue
        module.add_subparser(sub)
        assert name in sub.choices, f"{module_name} did not register {name!r}"
    return parser


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program its pipe closed


def _escape_unencodable_output() -> None:
    """Print what stdout's encoding cannot hold (a non-UTF-8 path) as ``\\udcff`` escapes."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="backslashreplace")


def _silence_closed_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's final
    flush does not raise a second ``BrokenPipeError`` (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``superlevel`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _escape_unencodable_output()
    try:
        result = args.func(args)
        sys.stdout.flush()  # a short output meets a closed pipe only here, not at exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        _silence_closed_stdout()
        return BROKEN_PIPE
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
