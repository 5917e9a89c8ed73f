"""The ``superlevel`` command.

Sub-commands are contributed by the sub-packages (``bench``, ``landscape``, ``data``):
each exposes ``add_subparser(subparsers)`` and sets ``func`` on its parser. They are
imported on demand so a missing optional extra only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``superlevel`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
