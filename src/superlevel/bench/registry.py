"""Name lookup and input errors shared by every registry of the harness.

:class:`UnknownNameError` (a name no registry knows) and :class:`ConfigError` (a value
outside what a task, optimizer or suite accepts) are the harness's own input errors:
the CLI turns exactly these into ``error: ...`` and exit status 2, while any other
exception (a bug) keeps its traceback. Kept apart from the registries so that importing
the errors loads neither torch models nor data loaders.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["ConfigError", "UnknownNameError", "lookup"]

V = TypeVar("V")


class ConfigError(ValueError):
    """A bad value for a task option, a hyperparameter or a run setting (message names it)."""


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
