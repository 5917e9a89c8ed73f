"""Rendering: typed document blocks to Markdown and to one self-contained HTML page.

The report is a list of :data:`Block` values (:class:`Heading`, :class:`Paragraph`,
:class:`Bullets`, :class:`Table`, :class:`Image`); both renderers walk the same list, so
the two documents always say the same thing. Inline markup is limited to ```code```,
``**bold**``, ``*italic*``, ``\\*`` (a literal star) and ``[text](link)``.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Block",
    "Bullets",
    "Heading",
    "Image",
    "Paragraph",
    "Table",
    "naming",
    "to_html",
    "to_markdown",
]


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised while writing ``path`` that file name, if it has none.

    A write that fails after the file was opened (a full disk) says only "No space left
    on device"; the message the user reads should say where.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


@dataclass(frozen=True)
class Heading:
    """A section title, ``level`` 1 (the document's) to 6.

    ``anchor``: the HTML ``id`` that ``[text](#anchor)`` links reach (Markdown viewers
    derive their own from the text, so Markdown ignores it).
    """

    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of text."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list, one item per entry."""

    items: list[str]


@dataclass(frozen=True)
class Table:
    """A table: the header cells and the rows (each as long as the header)."""

    head: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    """A PNG figure with its caption; ``path`` must lie under the Markdown's ``base``."""

    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """Render ``blocks`` as Markdown; images are linked relative to ``base``."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Paragraph):
            out.append(f"{b.text}\n")
        elif isinstance(b, Bullets):
            out.extend(f"- {item}" for item in b.items)
            out.append("")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.head) + " |")
            out.append("|" + "---|" * len(b.head))
            out.extend("| " + " | ".join(r) + " |" for r in b.rows)
            out.append("")
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.path.relative_to(base).as_posix()})\n")
        else:
            raise TypeError(f"not a report block: {b!r}")
    return "\n".join(out)


_LINK = re.compile(r"\[([^\]]+)\]\(([^()\s]+)\)")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")
_STAR = "\x00"  # stands for an escaped "\\*" while the star markup is read


def _inline_text(text: str) -> str:
    # Outside code spans: \* is a literal star, then links, **bold**, *italic*.
    text = text.replace("\\*", _STAR)
    text = _LINK.sub(r'<a href="\2">\1</a>', text)
    parts = text.split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    return _ITALIC.sub(r"<i>\1</i>", text).replace(_STAR, "*")


def _inline_md(text: str) -> str:
    # Only the inline forms the reports use (see the module docstring).
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else _inline_text(p) for i, p in enumerate(parts))


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "figcaption{font-size:0.85em;color:#555}"
)


def to_html(blocks: Sequence[Block], title: str = "superlevel benchmark") -> str:
    """Render ``blocks`` as one self-contained HTML page (PNG figures embedded as base64)."""
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{_inline_md(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline_md(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{_inline_md(item)}</li>" for item in b.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_md(h)}</th>" for h in b.head)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
        else:
            raise TypeError(f"not a report block: {b!r}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
