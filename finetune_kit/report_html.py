"""``report.html``: one self-contained page (inline CSS, plots as base64 data URIs, no script,
nothing fetched from a network). Every text is escaped; a chart without its image shows its
numbers as a table."""

from __future__ import annotations

import base64
import html
from typing import Any

from .markdown import format_number, interval_text
from .report_content import Block, Table, chart_as_table, is_marked, mark_events, metrics_table, table

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.3em 0}
.mk{color:#b0307a;font-weight:700}.mk sub{font-size:.7em}
img{max-width:100%;margin:.5em 0;border:1px solid #eee}
.note{color:#555;font-size:.9em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
"""


def html_marked(value: dict[str, Any]) -> str:
    text, out, cursor = value["text"], [], 0
    for pos, opens, label in mark_events(value["marks"]):
        out.append(html.escape(text[cursor:pos]))
        out.append('<span class="mk">[</span>' if opens else
                   f'<span class="mk">]<sub>{html.escape(label)}</sub></span>')
        cursor = pos
    out.append(html.escape(text[cursor:]))
    return "".join(out)


def html_cell(value: Any) -> str:
    if is_marked(value):
        return html_marked(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(html.escape(format_number(v)) for v in value)
    return "" if value is None else html.escape(format_number(value))


def html_table(block: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block["columns"])
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html_cell(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                         else f"<td>{html_cell(v)}</td>" for v in row) + "</tr>"
        for row in block["rows"])
    note = f'<p class="note">{html.escape(block["note"])}</p>' if block.get("note") else ""
    return f"<table><caption>{html.escape(block['title'])}</caption><tr>{head}</tr>{body}</table>{note}"


def html_blocks(blocks: list[Block], images: dict[str, bytes]) -> str:
    out = []
    for block in blocks:
        if block["kind"] == "table":
            out.append(html_table(block))
        elif block.get("plot") in images:
            data = base64.b64encode(images[block["plot"]]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block["title"])}" src="data:image/png;base64,{data}"></figure>')
        else:
            out.append(html_table(chart_as_table(block)))
    return "\n".join(out)


def split_html(split: str, part: dict[str, Any], images: dict[str, bytes]) -> list[str]:
    """A split: its summary, headline metrics with intervals, sections, and every scalar metric
    folded away unless the summary shows them already."""
    parts = [f"<h2>{html.escape(split)}</h2>", html_blocks(part["summary"], images)]
    if part["headline"]:
        rows = [[r["metric"], r["value"], interval_text(r)] for r in part["headline"]]
        parts.append(html_table(table("Headline metrics", ["metric", "value", "95% CI"], rows)))
        if part.get("intervals"):
            i = part["intervals"]
            parts.append(f'<p class="note">Intervals: {html.escape(i["method"])}, {i["resamples"]} resamples of '
                         f'the {html.escape(i["resampling_unit"])}s, seed {i["seed"]}.</p>')
    for s in part["sections"]:
        parts.append(f"<h3>{html.escape(s['title'])}</h3>")
        if s.get("note"):
            parts.append(f'<p class="note">{html.escape(s["note"])}</p>')
        parts.append(html_blocks(s["blocks"], images))
    every = metrics_table(part["metrics"])
    if every not in part["summary"]:
        parts.append(f"<details><summary>All metrics</summary>{html_table(every)}</details>")
    return parts


def render_html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    parts = [f"<h1>{html.escape(report['title'])}</h1>", "<dl>"]
    parts += [f"<dt>{html.escape(k.replace('_', ' '))}</dt><dd>{html.escape(format_number(v))}</dd>"
              for k, v in report["header"].items()]
    parts.append("</dl>")
    for split, part in report["splits"].items():
        parts += split_html(split, part, images)
    if report.get("training"):
        parts += ["<h2>Training</h2>", html_blocks(report["training"]["blocks"], images)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report["title"])}'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
