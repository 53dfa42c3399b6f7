"""``report.md``, and the summary of a split printed on the console after training.

Per split: its summary blocks under the split's heading, the headline metrics with their
intervals, then the sections. Charts are links to their PNG files; where no plots were written
a heat map's numbers and a scatter plot's points binned by x appear as tables, and bar charts and
curves are left out.
"""

from __future__ import annotations

from typing import Any

from .markdown import format_number, interval_text, markdown_table, markdown_text
from .report_content import Block, chart_as_table, report_blocks


def blocks_markdown(blocks: list[Block], with_plots: bool) -> list[str]:
    lines = []
    for block in blocks:
        if block["kind"] == "table":
            lines += [f"**{markdown_text(block['title'])}**", markdown_table(block["columns"], block["rows"])]
            if block.get("note"):
                lines.append(markdown_text(block["note"]))
        elif "plot" in block and with_plots:
            lines.append(f"![{markdown_text(block['title'])}]({block['plot']})")
        elif block["kind"] in ("heatmap", "scatter"):
            shown = chart_as_table(block)
            lines += [f"**{markdown_text(shown['title'])}**", markdown_table(shown["columns"], shown["rows"])]
    return lines


def summary_markdown(split: str, part: dict[str, Any], with_plots: bool = False) -> str:
    """The split's heading and its summary blocks (``part`` is the split's entry in report.json)."""
    return "\n\n".join([f"## {markdown_text(split)}", *blocks_markdown(part["summary"], with_plots)])


def headline_markdown(part: dict[str, Any]) -> list[str]:
    if not part["headline"]:
        return []
    lines = [markdown_table(["metric", "value", "95% CI"],
                            [[r["metric"], r["value"], interval_text(r)] for r in part["headline"]])]
    if part.get("intervals"):
        i = part["intervals"]
        lines.append(f"Intervals: {i['method']}, {i['resamples']} resamples of the {i['resampling_unit']}s, "
                     f"seed {i['seed']}.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    chunks = [f"# {markdown_text(report['title'])}",
              "\n".join(f"- **{markdown_text(key.replace('_', ' '))}**: {markdown_text(format_number(value))}"
                        for key, value in report["header"].items())]
    plots = any("plot" in block for _, block in report_blocks(report))
    for split, part in report["splits"].items():
        name = markdown_text(split)  # an evaluation's split is named after its data file
        chunks.append(summary_markdown(split, part, plots))
        extra = headline_markdown(part)
        if extra:
            chunks += [f"### {name}: headline metrics with 95% confidence intervals", *extra]
        for s in part["sections"]:
            body = blocks_markdown(s["blocks"], plots)
            if body:
                chunks += [f"### {name}: {markdown_text(s['title'])}",
                           *([markdown_text(s["note"])] if s.get("note") else []), *body]
    if report.get("training"):
        chunks += ["## Training", *blocks_markdown(report["training"]["blocks"], plots)]
    return "\n\n".join(chunk for chunk in chunks if chunk) + "\n"

