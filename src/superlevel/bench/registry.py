"""Name lookup shared by every registry of the harness (tasks, optimizers, suites).

Kept apart from the registries themselves so that importing the error (the CLI does, to
turn it into a clear message) loads neither torch models nor data loaders.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["UnknownNameError", "lookup"]

V = TypeVar("V")


class UnknownNameError(KeyError):
    """An unknown registry name; the message names it, lists valid names and a close match."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(valid)}.{hint}")
        self.name = name
        self.valid = valid

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def lookup(kind: str, table: Mapping[str, V], name: str) -> V:
    """``table[name]``, or :class:`UnknownNameError` naming ``kind`` and the valid names."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UnknownNameError(kind, name, list(table)) from None
