"""Generated blocks in Markdown files: text between two marker lines, rewritten by code.

The README and the docs quote measured results (the demo's table, the study's verdicts,
benchmark tables) between an opening and a closing HTML comment; only the code that
measured them writes there. One function does the replacement, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_block", "replace_block", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a failed write leaves the old."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_block(path: str | os.PathLike[str], begin: str, end: str) -> None:
    """Check, before any work, that :func:`replace_block` can rewrite ``path``'s block.

    Raises:
        ValueError: ``path`` is not a readable UTF-8 file, or lacks either marker.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (it must exist and hold the block {begin!r})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path} has no generated block (the lines {begin!r} ... {end!r})")


def replace_block(path: str | os.PathLike[str], begin: str, end: str, block: str) -> bool:
    """Replace the text between the lines ``begin`` and ``end`` of ``path`` with ``block``.

    Returns whether the file changed (an unchanged block is not rewritten).

    Raises:
        ValueError: the file lacks either marker, or has them in the wrong order
            (nothing is written).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path} has no generated block (the lines {begin!r} ... {end!r})")
    new = text[: start + len(begin)] + "\n" + block + "\n" + text[stop:]
    if new == text:
        return False
    write_atomic(path, new)
    return True
