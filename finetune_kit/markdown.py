"""Markdown text for reports, model cards and ``compare``, with data and user text shown as written.

Labels, example texts and file, model and column names come from the data or the user; a
Markdown viewer (a Hub page, a code forge) would run HTML in them and read ``|``, ``[`` and
backticks as syntax, so every such text goes through ``markdown_text`` or ``markdown_code``.
``format_number`` is how every rendering of a report writes a number.
"""

from __future__ import annotations

import re
from typing import Any

from .report_content import is_marked, mark_events

MARKDOWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "|": "\\|", "[": "\\[",
                                  "`": "\\`", "\r": " ", "\n": " "})


def format_number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4f}"
    return str(value)


def markdown_text(value: Any) -> str:
    """Text from the data or the user as Markdown that shows it as written: HTML tags become
    text, ``|`` and line breaks cannot split a table row, and ``[`` and backticks start no link,
    image or code span."""
    return str(value).translate(MARKDOWN_ESCAPES)


def markdown_code(value: Any) -> str:
    """Text from the data or the user as an inline code span (outside tables): delimited by more
    backticks than any run of them in it, so nothing in it ends the span; line breaks become spaces."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


class Markdown(str):
    """Text that is Markdown already (any data or user text in it passed through ``markdown_text``):
    a table cell shows it as it is."""


def markdown_marked(value: dict[str, Any]) -> str:
    """Marked text with its spans in brackets, each closing bracket followed by its label."""
    text, out, cursor = value["text"], [], 0
    for pos, opens, label in mark_events(value["marks"]):
        out.append(markdown_text(text[cursor:pos]))
        out.append("\\[" if opens else f"\\]{markdown_text(label)}")
        cursor = pos
    out.append(markdown_text(text[cursor:]))
    return "".join(out)


def markdown_cell(value: Any) -> str:
    if isinstance(value, Markdown):
        return value
    if is_marked(value):
        return markdown_marked(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(markdown_text(format_number(v)) for v in value)
    return "" if value is None else markdown_text(format_number(value))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; header names and cells are shown as written (``markdown_text``)."""
    lines = ["| " + " | ".join(markdown_text(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def interval_text(row: dict[str, Any]) -> str:
    """The 95% interval of a headline row (``[low, high]``), empty where none was computed."""
    return Markdown(f"[{row['low']:.4f}, {row['high']:.4f}]") if "low" in row else ""
