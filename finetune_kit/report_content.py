"""What a task puts in the evaluation report of a split, and the blocks it is made of.

A task's ``report(predictions, raw, metrics)`` returns a ``ReportContent``: the summary blocks
shown first (in report.md, in report.html and on the console after training), its headline
metrics with the per-example statistics the bootstrap resamples for their intervals, and
further sections. Blocks are plain JSON-ready dicts (they go into report.json as they are),
made by the constructors below: ``table``, ``bar_chart``, ``heatmap`` and ``curve``; a table
cell may be ``marked`` text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, Union

import numpy as np

from .stats import Resampled

MAX_EXAMPLES = 10  # error examples listed per kind


class MarkedText(TypedDict):
    """Text with labelled character spans ``[start, end, label]`` (``marked``)."""

    text: str
    marks: list[list[Any]]


Cell = Union[int, float, str, MarkedText, None]


class _TableOptions(TypedDict, total=False):
    note: str  # a sentence under the table


class _ChartOptions(TypedDict, total=False):
    plot: str  # the chart's PNG in the report directory, set when the report is written with plots


class Table(_TableOptions):
    kind: Literal["table"]
    title: str
    columns: list[str]
    rows: list[list[Cell]]


class BarChart(_ChartOptions):
    kind: Literal["bars"]
    title: str
    categories: list[str]
    series: dict[str, list[float]]
    ylabel: str
    ylim: list[float] | None


class Heatmap(_ChartOptions):
    kind: Literal["heatmap"]
    title: str
    labels: list[str]
    matrix: list[list[float]]
    normalised: bool


class Curve(_ChartOptions):
    kind: Literal["curve"]
    title: str
    xlabel: str
    ylabel: str
    series: dict[str, dict[str, list[float]]]  # name -> {"x": [...], "y": [...]}
    markers: list[dict[str, Any]]  # {"x": position, "label": text}
    steps: bool


class Scatter(_ChartOptions):
    kind: Literal["scatter"]
    title: str
    xlabel: str
    ylabel: str
    x: list[float]
    y: list[float]
    diagonal: bool  # the line y = x (a perfect prediction) drawn under the points
    total: int  # points before thinning (``x`` holds at most ``MAX_SCATTER_POINTS``)


Block = Union[Table, BarChart, Heatmap, Curve, Scatter]
CHART_KINDS = ("bars", "heatmap", "curve", "scatter")
MAX_SCATTER_POINTS = 2000  # kept in report.json per scatter plot, evenly spread over the x order
SCATTER_TABLE_BINS = 10


@dataclass(frozen=True)
class Section:
    """A titled group of blocks after a split's summary, with an optional note under its title."""

    title: str
    blocks: list[Block]
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "blocks": self.blocks, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class ReportContent:
    """The report of one split, as a task gives it."""

    # Shown first, under the split's heading: its main figures, also printed after training.
    summary: list[Block]
    # (label, metric key) of the figures given with a 95% interval; a dotted key reaches into
    # nested metrics (``default_mode.f1``).
    headline: list[tuple[str, str]] = field(default_factory=list)
    # Per-example statistics of headline metrics (``stats.mean_of``, ``ratio_of``, ``micro_prf``),
    # named by metric key; the bootstrap resamples them for the intervals.
    bootstrap: list[Resampled] = field(default_factory=list)
    # What one row of the statistics is ("sentence", "question"...), as the intervals name it.
    resampling_unit: str = "example"
    sections: list[Section] = field(default_factory=list)


# -- blocks --------------------------------------------------------------------------------------

def table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None) -> Table:
    """A table; a cell is a number, a string, or ``marked(...)`` text."""
    return {"kind": "table", "title": title, "columns": columns, "rows": rows, **({"note": note} if note else {})}


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str = "score",
              ylim: tuple[float, float] | None = (0.0, 1.0)) -> BarChart:
    """Grouped bars: for each category one bar per series."""
    return {"kind": "bars", "title": title, "categories": list(categories),
            "series": {k: [float(v) for v in values] for k, values in series.items()}, "ylabel": ylabel,
            "ylim": list(ylim) if ylim else None}


def heatmap(title: str, labels: list[str], matrix: Sequence[Sequence[float]], normalised: bool = False) -> Heatmap:
    """A confusion matrix (rows gold, columns predicted), as counts or row-normalised shares."""
    return {"kind": "heatmap", "title": title, "labels": list(labels),
            "matrix": [[float(v) if normalised else int(v) for v in row] for row in matrix], "normalised": normalised}


def curve(title: str, xlabel: str, ylabel: str, series: dict[str, tuple[Sequence[float], Sequence[float]]],
          markers: list[tuple[float, str]] | None = None, steps: bool = False) -> Curve:
    """Lines y(x), one per series, with labelled vertical markers (e.g. a tuned threshold);
    ``steps``: each point stands for a range of x where y is constant, so points are drawn
    without lines between them."""
    return {"kind": "curve", "title": title, "xlabel": xlabel, "ylabel": ylabel,
            "series": {k: {"x": [float(v) for v in x], "y": [float(v) for v in y]} for k, (x, y) in series.items()},
            "markers": [{"x": float(x), "label": label} for x, label in markers or []], "steps": steps}


def scatter(title: str, xlabel: str, ylabel: str, x: Sequence[float], y: Sequence[float],
            diagonal: bool = False) -> Scatter:
    """One point per example (gold against predicted, say), with the line y = x when ``diagonal``.
    A large split keeps ``MAX_SCATTER_POINTS`` of its points, evenly spread over the x order, so
    that the plot keeps its shape and report.json stays small."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    if len(order) > MAX_SCATTER_POINTS:
        order = order[np.linspace(0, len(order) - 1, MAX_SCATTER_POINTS).round().astype(int)]
    return {"kind": "scatter", "title": title, "xlabel": xlabel, "ylabel": ylabel, "x": xs[order].tolist(),
            "y": ys[order].tolist(), "diagonal": diagonal, "total": len(xs)}


def scatter_as_table(block: Scatter) -> Table:
    """A scatter plot without its image: the points in up to ten bins of x of equal count, each
    with its x range, its number of points (of those kept) and the mean and spread of y."""
    xs, ys = np.asarray(block["x"]), np.asarray(block["y"])
    rows = [[f"{part_x.min():.4g} to {part_x.max():.4g}", len(part_x), float(part_y.mean()), float(part_y.std())]
            for part_x, part_y in zip(np.array_split(xs, min(SCATTER_TABLE_BINS, len(xs))),
                                      np.array_split(ys, min(SCATTER_TABLE_BINS, len(ys)))) if len(part_x)]
    kept = f" ({len(xs)} of its {block['total']} points)" if len(xs) < block["total"] else ""
    return table(block["title"], [block["xlabel"], "points", f"mean {block['ylabel']}", f"sd {block['ylabel']}"],
                 rows, note=f"The plot's points{kept} binned by {block['xlabel']}.")


def marked(text: str, marks: Sequence[tuple[int, int, str]]) -> MarkedText:
    """Text with labelled character spans (entities, answers) to show in place; spans may nest."""
    return {"text": text, "marks": [[int(s), int(e), str(label)] for s, e, label in marks]}


def marked_tokens(tokens: Sequence[str], spans: Sequence[tuple[int, int, str]]) -> MarkedText:
    """``marked`` for word spans (start, end exclusive) of a sentence joined with spaces."""
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    ends = [s + len(t) for s, t in zip(starts, tokens)]
    return marked(" ".join(tokens), [(starts[s], ends[e - 1], label) for s, e, label in spans if e > s])


def is_marked(value: Any) -> bool:
    return isinstance(value, dict) and "marks" in value


def mark_events(marks: list[list[Any]]) -> list[tuple[int, bool, str]]:
    """(position, opens, label) of every bracket of marked text, in text order: at one position
    closing brackets come before opening ones, a longer span opens first and closes last, so
    nested spans nest."""
    keyed = []
    for start, end, label in marks:
        keyed.append(((start, 1, -(end - start)), (start, True, label)))
        keyed.append(((end, 0, end - start), (end, False, label)))
    return [event for _, event in sorted(keyed, key=lambda item: item[0])]


def chart_as_table(block: Block) -> Table:
    """A chart's numbers as a table, where no image is shown (plots off, Markdown heat maps)."""
    if block["kind"] == "bars":
        names = list(block["series"])
        return table(block["title"], ["", *names], [[c, *[block["series"][n][i] for n in names]]
                                                    for i, c in enumerate(block["categories"])])
    if block["kind"] == "heatmap":
        return table(block["title"], ["gold \\ predicted", *block["labels"]],
                     [[label, *row] for label, row in zip(block["labels"], block["matrix"])])
    if block["kind"] == "scatter":
        return scatter_as_table(block)
    rows = [[name, x, y] for name, points in block["series"].items() for x, y in zip(points["x"], points["y"])]
    return table(block["title"], ["series", block["xlabel"], block["ylabel"]], rows)


def report_blocks(report: dict[str, Any]) -> list[tuple[str, Block]]:
    """(split, block) for every block of an assembled report (what report.json holds): each
    split's summary and sections, then the training section's blocks with split ''."""
    found = [(split, block) for split, part in report["splits"].items()
             for block in [*part["summary"], *(b for s in part["sections"] for b in s["blocks"])]]
    if report.get("training"):
        found += [("", block) for block in report["training"]["blocks"]]
    return found


# -- blocks the built-in tasks share ---------------------------------------------------------------

def row_normalised(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each row divided by its sum (the share of a gold label's examples per prediction)."""
    values = np.asarray(matrix, dtype=np.float64)
    sums = values.sum(axis=1, keepdims=True)
    return np.divide(values, sums, out=np.zeros_like(values), where=sums != 0).tolist()


def per_label_table(per_label: dict[str, dict[str, Any]], what: str = "label", title: str = "Per label") -> Table:
    """Precision, recall, F1 and support per label (or entity type)."""
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per_label.items()]
    return table(title, [what, "precision", "recall", "F1", "support"], rows)


def per_label_chart(per_label: dict[str, dict[str, Any]], title: str = "Per label") -> BarChart:
    """Precision, recall and F1 per label (or entity type) as grouped bars."""
    names = list(per_label)
    return bar_chart(title, names, {k: [per_label[n][key] for n in names]
                                    for k, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"))})


def confusion_table(confusion: dict[str, Any]) -> Table:
    """The confusion matrix as counts (rows gold, columns predicted)."""
    return table("Confusion matrix (rows: gold, columns: predicted)", ["gold \\ predicted", *confusion["labels"]],
                 [[gold, *counts] for gold, counts in zip(confusion["labels"], confusion["matrix"])])


def confusion_heatmaps(confusion: dict[str, Any]) -> list[Block]:
    """The confusion matrix as counts and as each gold label's shares."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    return [heatmap("Confusion matrix (counts; rows gold, columns predicted)", labels, matrix),
            heatmap("Confusion matrix (row-normalised: share of each gold label)", labels, row_normalised(matrix),
                    normalised=True)]


# -- metrics as content -----------------------------------------------------------------------------

def metric_at(metrics: dict[str, Any], key: str) -> Any:
    """A metric by dotted path (``default_mode.f1``), None when absent."""
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every number and string in nested metrics, by dotted path."""
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            out += scalar_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", value))
    return out


def metrics_table(metrics: dict[str, Any]) -> Table:
    """Every scalar metric of a split, as in metrics.json."""
    return table("All metrics (as in metrics.json)", ["metric", "value"], [[k, v] for k, v in scalar_metrics(metrics)])


def metrics_content(metrics: dict[str, Any]) -> ReportContent:
    """The report of a split that says nothing more than its metrics: a table of them all."""
    return ReportContent(summary=[metrics_table(metrics)])
