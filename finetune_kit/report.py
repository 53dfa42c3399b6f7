"""Evaluation reports: ``metrics.json``, ``report.json``, ``report.md``, ``report.html`` and PNG plots.

One evaluation pass feeds everything. For each split the task contributes, through the optional
``report_sections(predictions, raw, metrics)`` method, the headline metrics, the per-example
statistics the bootstrap resamples, and sections of content blocks (tables, bar charts, heat
maps, curves, error examples). This module adds the confidence intervals, the training curves
from ``train_log.jsonl`` and the run's header, and renders the same content three ways:

- ``report.json``: every number, as computed (the HTML and Markdown are rendered from it);
- ``report.html``: one self-contained file (inline CSS, plots as base64 data URIs, no script,
  nothing fetched from a network);
- ``report.md``: the tasks' own summaries (``write_report``) followed by the same sections.

A task without ``report_sections`` (an older third-party plugin) gets a table of its scalar
metrics instead. Blocks are plain dicts built by the helpers below, so a plugin can make them.
"""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, atomic_write_text
from .stats import DEFAULT_RESAMPLES, bootstrap, interval_settings
from .task import Task

PLOTS_DIR = "plots"
REPORT_FORMAT_VERSION = 1
MAX_EXAMPLES = 10  # error examples listed per kind
CHART_KINDS = ("bars", "heatmap", "curve")


@dataclass(frozen=True)
class ReportSettings:
    """How reports are made (none of it changes a metric)."""

    # Write PNG plots and embed them in report.html (off: the charts' numbers appear as tables).
    plots: bool = True
    # Bootstrap resamples for the confidence intervals; 0 computes none.
    bootstrap_resamples: int = DEFAULT_RESAMPLES
    # Seed of the bootstrap's random generator.
    seed: int = 42


# -- Markdown helpers used by the tasks' ``write_report`` ------------------------------------

MARKDOWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "|": "\\|", "[": "\\[",
                                  "`": "\\`", "\r": " ", "\n": " "})


def markdown_text(value: Any) -> str:
    """Text from the data or the user (labels, example texts, file, model and column names) as
    Markdown that shows it as written: HTML tags become text (a Hub page or Markdown viewer would
    run them), ``|`` and line breaks cannot split a table row, and ``[`` and backticks start no
    link, image or code span."""
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


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; header names and cells are shown as written (``markdown_text``)."""
    lines = ["| " + " | ".join(markdown_text(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def per_label_table(per_label: dict[str, dict[str, Any]]) -> str:
    rows = [[label, m["precision"], m["recall"], m["f1"], m["support"]] for label, m in per_label.items()]
    return markdown_table(["label", "precision", "recall", "F1", "support"], rows)


def confusion_table(confusion: dict[str, Any]) -> str:
    labels = confusion["labels"]
    rows = [[Markdown(f"**{markdown_text(gold)}**"), *counts] for gold, counts in zip(labels, confusion["matrix"])]
    return markdown_table(["gold \\ predicted", *labels], rows)


# -- content blocks --------------------------------------------------------------------------

def table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None,
          summarised: bool = False) -> dict[str, Any]:
    """A table; a cell is a number, a string, or ``marked(...)`` text. ``summarised``: the task's
    ``write_report`` already shows it, so report.md (which starts with that) leaves it out."""
    return {"kind": "table", "title": title, "columns": columns, "rows": rows, **({"note": note} if note else {}),
            **({"summarised": True} if summarised else {})}


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str = "score",
              ylim: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any]:
    """Grouped bars: for each category one bar per series."""
    return {"kind": "bars", "title": title, "categories": list(categories),
            "series": {k: [float(v) for v in values] for k, values in series.items()}, "ylabel": ylabel,
            "ylim": list(ylim) if ylim else None}


def heatmap(title: str, labels: list[str], matrix: Sequence[Sequence[float]], normalised: bool = False) -> dict[str, Any]:
    """A confusion matrix (rows gold, columns predicted), as counts or row-normalised shares."""
    return {"kind": "heatmap", "title": title, "labels": list(labels),
            "matrix": [[float(v) if normalised else int(v) for v in row] for row in matrix], "normalised": normalised}


def curve(title: str, xlabel: str, ylabel: str, series: dict[str, tuple[Sequence[float], Sequence[float]]],
          markers: list[tuple[float, str]] | None = None, steps: bool = False) -> dict[str, Any]:
    """Lines y(x), one per series, with labelled vertical markers (e.g. a tuned threshold);
    ``steps``: each point stands for a range of x where y is constant, so points are drawn
    without lines between them."""
    return {"kind": "curve", "title": title, "xlabel": xlabel, "ylabel": ylabel,
            "series": {k: {"x": [float(v) for v in x], "y": [float(v) for v in y]} for k, (x, y) in series.items()},
            "markers": [{"x": float(x), "label": label} for x, label in markers or []], "steps": steps}


def marked(text: str, marks: Sequence[tuple[int, int, str]]) -> dict[str, Any]:
    """Text with labelled character spans (entities, answers) to show in place; spans may nest."""
    return {"text": text, "marks": [[int(s), int(e), str(label)] for s, e, label in marks]}


def marked_tokens(tokens: Sequence[str], spans: Sequence[tuple[int, int, str]]) -> dict[str, Any]:
    """``marked`` for word spans (start, end exclusive) of a sentence joined with spaces."""
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    ends = [s + len(t) for s, t in zip(starts, tokens)]
    return marked(" ".join(tokens), [(starts[s], ends[e - 1], label) for s, e, label in spans if e > s])


def section(title: str, blocks: list[dict[str, Any]], note: str | None = None) -> dict[str, Any]:
    return {"title": title, "blocks": blocks, **({"note": note} if note else {})}


def row_normalised(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each row divided by its sum (the share of a gold label's examples per prediction)."""
    values = np.asarray(matrix, dtype=np.float64)
    sums = values.sum(axis=1, keepdims=True)
    return np.divide(values, sums, out=np.zeros_like(values), where=sums != 0).tolist()


def per_label_blocks(per_label: dict[str, dict[str, Any]], what: str = "label", title: str = "Per label",
                     summarised: bool = False) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per label (or entity type) as a table and a bar chart."""
    names = list(per_label)
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per_label.items()]
    return [table(title, [what, "precision", "recall", "F1", "support"], rows, summarised=summarised),
            bar_chart(title, names, {k: [per_label[n][key] for n in names]
                                     for k, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"))})]


def confusion_blocks(confusion: dict[str, Any]) -> list[dict[str, Any]]:
    labels, matrix = confusion["labels"], confusion["matrix"]
    return [heatmap("Confusion matrix (counts; rows gold, columns predicted)", labels, matrix),
            heatmap("Confusion matrix (row-normalised: share of each gold label)", labels, row_normalised(matrix),
                    normalised=True)]


EXAMPLES_PER_BUCKET = 5


def entity_error_section(sentences: Sequence[Sequence[str]], gold: Sequence[Sequence[tuple[int, int, str]]],
                         predicted: Sequence[Sequence[tuple[int, int, str]]]) -> dict[str, Any]:
    """Error buckets of entity predictions (see ``metrics.entity_error_buckets``): counts as a
    table and a chart, and the first few examples of each kind of error with the gold and the
    predicted entities marked in the sentence."""
    from .metrics import ERROR_BUCKETS, entity_error_buckets

    counts = dict.fromkeys(ERROR_BUCKETS, 0)
    examples: dict[str, list[list[Any]]] = {name: [] for name in ERROR_BUCKETS if name != "correct"}
    for k, (tokens, g, p) in enumerate(zip(sentences, gold, predicted)):
        buckets = entity_error_buckets(g, p)
        for name, items in buckets.items():
            counts[name] += len(items)
            if name == "correct":
                continue
            for item in items[: max(0, EXAMPLES_PER_BUCKET - len(examples[name]))]:
                entity = item[0] if isinstance(item[0], tuple) else item
                shown = " ".join(tokens[entity[0]:entity[1]]) + f" ({entity[2]})"
                if isinstance(item[0], tuple):
                    shown += f" vs gold {' '.join(tokens[item[1][0]:item[1][1]])} ({item[1][2]})"
                examples[name].append([name, k + 1, shown, marked_tokens(tokens, g), marked_tokens(tokens, p)])
    rows = [[name, count] for name, count in counts.items()]
    return section("Error buckets", [
        table("Entities per bucket", ["bucket", "entities"], rows,
              note="Predicted entities are correct, wrong type (a gold span with another type), wrong boundary "
                   "(overlapping a gold entity, not its span) or spurious (overlapping none); gold entities no "
                   "prediction overlaps are missed."),
        bar_chart("Entities per bucket", list(counts), {"entities": list(counts.values())}, ylabel="entities",
                  ylim=None),
        table(f"Examples (up to {EXAMPLES_PER_BUCKET} per kind of error)",
              ["bucket", "sentence", "entity", "gold", "predicted"], [r for rows in examples.values() for r in rows]),
    ])


# -- assembling a report ----------------------------------------------------------------------

def metric_at(metrics: dict[str, Any], key: str) -> Any:
    """A metric by dotted path (``default_mode.f1``), None when absent."""
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every number and string in nested metrics, by dotted path (for plugins without sections)."""
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            out += scalar_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", value))
    return out


def check_estimate(key: str, estimate: float, value: Any) -> None:
    """The bootstrap's statistics must reproduce the metric they give an interval for; a task
    whose statistics disagree with its metrics gets a warning, not a silently shifted interval."""
    if isinstance(value, (int, float)) and abs(estimate - value) > 1e-6:
        warnings.warn(f"report: the bootstrap statistics of '{key}' give {estimate:.6f} but the metric is "
                      f"{value:.6f}; its interval does not describe the metric", stacklevel=3)


def split_report(task: Task, predictions: list[dict[str, Any]] | None, raw: Any, metrics: dict[str, Any],
                 settings: ReportSettings | None = None) -> dict[str, Any]:
    """The report of one split: its metrics, headline figures with bootstrap intervals, and the
    task's sections (or, for a task without ``report_sections``, a table of its metrics)."""
    settings = settings or ReportSettings()
    content = task.report_sections(predictions, raw, metrics) if predictions is not None else {}
    unit = content.get("resampling_unit", "example")
    intervals = bootstrap(content.get("bootstrap", []), settings.bootstrap_resamples, settings.seed)
    headline = []
    for label, key in content.get("headline", []):
        value = metric_at(metrics, key)
        if value is None:
            continue
        row = {"metric": label, "key": key, "value": value}
        if key in intervals:
            check_estimate(key, intervals[key]["estimate"], value)
            row.update(low=intervals[key]["low"], high=intervals[key]["high"])
        headline.append(row)
    sections = content.get("sections")
    if sections is None:
        sections = [section("Metrics", [table("All metrics", ["metric", "value"],
                                              [[k, v] for k, v in scalar_metrics(metrics)])])]
    return {"metrics": metrics, "headline": headline,
            "intervals": {**interval_settings(settings.bootstrap_resamples, settings.seed, unit), "metrics": intervals}
            if intervals else None,
            "sections": sections}


def read_training_log(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None or not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return records


def training_section(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Curves of the training loss, the learning rate and the validation metrics per evaluation,
    and the run's summary, from the records of ``train_log.jsonl``."""
    train = [r for r in records if r.get("event") == "train"]
    evaluations = [r for r in records if r.get("event") == "evaluate"]
    end = next((r for r in reversed(records) if r.get("event") == "train_end"), None)
    if not train and not evaluations:
        return None
    blocks = []
    if train:
        steps = [r["step"] for r in train]
        blocks.append(curve("Training loss", "optimizer step", "loss",
                            {"training loss": (steps, [r.get("loss", float("nan")) for r in train])}))
        blocks.append(curve("Learning rate", "optimizer step", "learning rate",
                            {"learning rate": (steps, [r.get("learning_rate", float("nan")) for r in train])}))
    if evaluations:
        steps = [r["step"] for r in evaluations]
        names = sorted({k for r in evaluations for k in r.get("metrics", {})})
        best = end.get("metric_for_best") if end else None
        scores = [n for n in names if n != "loss" and not n.startswith("num_")]
        shown = [n for n in scores if n == best] or scores
        markers = [(end["best_step"], f"best step {end['best_step']}")] if end and end.get("best_step") else []
        if shown:
            blocks.append(curve("Validation metric per evaluation", "optimizer step", ", ".join(shown),
                                {n: (steps, [r["metrics"].get(n, float("nan")) for r in evaluations]) for n in shown},
                                markers))
        if "loss" in names:
            blocks.append(curve("Validation loss per evaluation", "optimizer step", "loss",
                                {"validation loss": (steps, [r["metrics"].get("loss", float("nan")) for r in evaluations])},
                                markers))
        columns = [n for n in names if not n.startswith("num_")]  # counts do not change between evaluations
        blocks.append(table("Evaluations", ["step", "epoch", *columns],
                            [[r["step"], r.get("epoch", ""), *[r["metrics"].get(n, "") for n in columns]]
                             for r in evaluations]))
    if end:
        keys = ("train_runtime_s", "train_tokens", "train_padded_tokens", "tokens_per_s", "metric_for_best",
                "best_metric", "best_step", "step", "epoch")
        blocks.append(table("Run summary", ["", "value"], [[k.replace("_", " "), end[k]] for k in keys
                                                          if end.get(k) is not None]))
    return section("Training", blocks)


def build_report(task: Task, splits: dict[str, dict[str, Any]], header: dict[str, Any],
                 log_path: str | Path | None = None) -> dict[str, Any]:
    """The whole report (what ``report.json`` holds): header, one entry per split, training."""
    return {"format_version": REPORT_FORMAT_VERSION, "title": f"Evaluation report: {header.get('task', task.name)}",
            "header": {k: v for k, v in header.items() if v not in (None, "")}, "splits": splits,
            "training": training_section(read_training_log(log_path))}


def all_sections(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(split, section) for every section, training last with split ''."""
    found = [(split, s) for split, part in report["splits"].items() for s in part["sections"]]
    if report.get("training"):
        found.append(("", report["training"]))
    return found


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "plot"


def assign_plot_files(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Give every chart block a unique ``plot`` file name under plots/; returns the charts."""
    charts, used = [], set()
    for split, part in all_sections(report):
        for block in part["blocks"]:
            if block["kind"] not in CHART_KINDS:
                continue
            base = slug(f"{split} {block['title']}") if split else slug(f"training {block['title']}")
            name, k = base, 2
            while name in used:
                name, k = f"{base}-{k}", k + 1
            used.add(name)
            block["plot"] = f"{PLOTS_DIR}/{name}.png"
            charts.append(block)
    return charts


# -- rendering: numbers and marked text --------------------------------------------------------

def format_number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4f}"
    return str(value)


def _mark_events(marks: list[list[Any]]) -> list[tuple[int, bool, str]]:
    """(position, opens, label) of every bracket in text order: at one position closing
    brackets come before opening ones, a longer span opens first and closes last, so nested
    spans nest."""
    keyed = []
    for start, end, label in marks:
        keyed.append(((start, 1, -(end - start)), (start, True, label)))
        keyed.append(((end, 0, end - start), (end, False, label)))
    return [event for _, event in sorted(keyed, key=lambda item: item[0])]


def markdown_marked(value: dict[str, Any]) -> str:
    text, out, cursor = value["text"], [], 0
    for pos, opens, label in _mark_events(value["marks"]):
        out.append(markdown_text(text[cursor:pos]))
        out.append("\\[" if opens else f"\\]{markdown_text(label)}")
        cursor = pos
    out.append(markdown_text(text[cursor:]))
    return "".join(out)


def html_marked(value: dict[str, Any]) -> str:
    text, out, cursor = value["text"], [], 0
    for pos, opens, label in _mark_events(value["marks"]):
        out.append(html.escape(text[cursor:pos]))
        out.append('<span class="mk">[</span>' if opens else
                   f'<span class="mk">]<sub>{html.escape(label)}</sub></span>')
        cursor = pos
    out.append(html.escape(text[cursor:]))
    return "".join(out)


def markdown_cell(value: Any) -> str:
    if isinstance(value, Markdown):
        return value
    if isinstance(value, dict) and "marks" in value:
        return markdown_marked(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(markdown_text(format_number(v)) for v in value)
    return "" if value is None else markdown_text(format_number(value))


def html_cell(value: Any) -> str:
    if isinstance(value, dict) and "marks" in value:
        return html_marked(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(html.escape(format_number(v)) for v in value)
    return "" if value is None else html.escape(format_number(value))


def interval_text(row: dict[str, Any]) -> str:
    return Markdown(f"[{row['low']:.4f}, {row['high']:.4f}]") if "low" in row else ""


def chart_as_table(block: dict[str, Any]) -> dict[str, Any]:
    """A chart's numbers as a table, where no image is shown (plots off, Markdown heat maps)."""
    if block["kind"] == "bars":
        names = list(block["series"])
        return table(block["title"], ["", *names], [[c, *[block["series"][n][i] for n in names]]
                                                    for i, c in enumerate(block["categories"])])
    if block["kind"] == "heatmap":
        return table(block["title"], ["gold \\ predicted", *block["labels"]],
                     [[label, *row] for label, row in zip(block["labels"], block["matrix"])])
    rows = [[name, x, y] for name, points in block["series"].items() for x, y in zip(points["x"], points["y"])]
    return table(block["title"], ["series", block["xlabel"], block["ylabel"]], rows)


# -- Markdown -------------------------------------------------------------------------------

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


def blocks_markdown(blocks: list[dict[str, Any]], with_plots: bool) -> list[str]:
    lines = []
    for block in blocks:
        if block["kind"] == "table" and block.get("summarised"):
            continue
        if block["kind"] == "table":
            lines += [f"**{markdown_text(block['title'])}**", markdown_table(block["columns"], block["rows"])]
            if block.get("note"):
                lines.append(markdown_text(block["note"]))
        elif "plot" in block and with_plots:
            lines.append(f"![{markdown_text(block['title'])}]({block['plot']})")
        elif block["kind"] == "heatmap":
            shown = chart_as_table(block)
            lines += [f"**{markdown_text(shown['title'])}**", markdown_table(shown["columns"], shown["rows"])]
    return lines


def render_markdown(task: Task, report: dict[str, Any]) -> str:
    """The tasks' own summaries (``write_report``) per split, then the headline intervals and the
    sections' charts (as links to the PNG files) and tables the summaries do not already show."""
    chunks = [f"# {markdown_text(report['title'])}",
              "\n".join(f"- **{markdown_text(key.replace('_', ' '))}**: {markdown_text(format_number(value))}"
                        for key, value in report["header"].items())]
    plots = any("plot" in b for _, s in all_sections(report) for b in s["blocks"])
    for split, part in report["splits"].items():
        name = markdown_text(split)  # an evaluation's split is named after its data file
        chunks.append(task.write_report(part["metrics"], name))
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


# -- HTML ------------------------------------------------------------------------------------

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


def _html_table(block: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block["columns"])
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html_cell(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                         else f"<td>{html_cell(v)}</td>" for v in row) + "</tr>"
        for row in block["rows"])
    note = f'<p class="note">{html.escape(block["note"])}</p>' if block.get("note") else ""
    return f"<table><caption>{html.escape(block['title'])}</caption><tr>{head}</tr>{body}</table>{note}"


def _html_blocks(blocks: list[dict[str, Any]], images: dict[str, bytes]) -> str:
    out = []
    for block in blocks:
        if block["kind"] == "table":
            out.append(_html_table(block))
        elif block.get("plot") in images:
            data = base64.b64encode(images[block["plot"]]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block["title"])}" src="data:image/png;base64,{data}"></figure>')
        else:
            out.append(_html_table(chart_as_table(block)))
    return "\n".join(out)


def render_html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """One self-contained page: inline CSS, plots as data URIs, no script, no external link."""
    parts = [f"<h1>{html.escape(report['title'])}</h1>", "<dl>"]
    parts += [f"<dt>{html.escape(k.replace('_', ' '))}</dt><dd>{html.escape(format_number(v))}</dd>"
              for k, v in report["header"].items()]
    parts.append("</dl>")
    for split, part in report["splits"].items():
        parts.append(f"<h2>{html.escape(split)}</h2>")
        if part["headline"]:
            rows = [[r["metric"], r["value"], interval_text(r)] for r in part["headline"]]
            parts.append(_html_table(table("Headline metrics", ["metric", "value", "95% CI"], rows)))
            if part.get("intervals"):
                i = part["intervals"]
                parts.append(f'<p class="note">Intervals: {html.escape(i["method"])}, {i["resamples"]} resamples of '
                             f'the {html.escape(i["resampling_unit"])}s, seed {i["seed"]}.</p>')
        for s in part["sections"]:
            parts.append(f"<h3>{html.escape(s['title'])}</h3>")
            if s.get("note"):
                parts.append(f'<p class="note">{html.escape(s["note"])}</p>')
            parts.append(_html_blocks(s["blocks"], images))
        if part["headline"]:  # a task with sections: its other scalar metrics, folded away
            every = table("All scalar metrics (as in metrics.json)", ["metric", "value"],
                          [[k, v] for k, v in scalar_metrics(part["metrics"])])
            parts.append(f"<details><summary>All metrics</summary>{_html_table(every)}</details>")
    if report.get("training"):
        parts += ["<h2>Training</h2>", _html_blocks(report["training"]["blocks"], images)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report["title"])}'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


# -- writing ---------------------------------------------------------------------------------

def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_evaluation(
    directory: str | Path, task: Task, metrics: dict[str, dict[str, Any]], header: dict[str, Any],
    splits: dict[str, dict[str, Any]] | None = None, log_path: str | Path | None = None,
    settings: ReportSettings | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``report.json``, ``report.md``, ``report.html`` and the plots.

    ``splits`` are the ``split_report`` of each split (from its predictions); without them each
    split is reported from its metrics alone. Returns the report (what report.json holds).
    """
    settings = settings or ReportSettings()
    directory = Path(directory)
    if splits is None:
        splits = {name: split_report(task, None, None, m, settings) for name, m in metrics.items()}
    report = build_report(task, splits, header, log_path)
    images: dict[str, bytes] = {}
    if settings.plots:
        from .plots import render_png

        for block in assign_plot_files(report):
            images[block["plot"]] = render_png(block)
        for name, data in images.items():
            atomic_write_bytes(directory / name, data)
    metrics_path, report_path = directory / "metrics.json", directory / "report.md"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(directory / "report.json", json.dumps(_json_safe(report), indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(directory / "report.html", render_html(report, images))
    atomic_write_text(report_path, render_markdown(task, report))
    return report


# -- comparing runs --------------------------------------------------------------------------

COMPARED_SETTINGS = ("task", "model", "train_file", "validation_file", "test_file", "epochs", "max_steps",
                     "batch_size", "gradient_accumulation_steps", "learning_rate", "head_learning_rate",
                     "warmup_ratio", "weight_decay", "max_length", "seed", "lora", "lora_r", "train_top_layers",
                     "freeze_embeddings", "mixed_precision", "task_options")


class CompareError(ValueError):
    """A directory that holds no run or evaluation to compare."""


def read_run(directory: str | Path) -> dict[str, Any]:
    """The settings (from ``finetune_kit.json`` here, or in the model directory an evaluation
    report names) and the metrics and intervals of a run or evaluation directory."""
    directory = Path(directory)
    metrics_path = directory / "metrics.json"
    if not metrics_path.is_file():
        raise CompareError(f"{directory}: no metrics.json; give run directories (finetune-kit train --output) or "
                           f"evaluation directories")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    report_path = directory / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    settings: dict[str, Any] = {}
    model_dir = report.get("header", {}).get("model_directory")
    for candidate in (directory, *([Path(model_dir)] if model_dir else [])):
        manifest = candidate / "finetune_kit.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            settings = {**data.get("config", {}), "task": data.get("task")}
            break
    intervals = {split: (part.get("intervals") or {}).get("metrics", {})
                 for split, part in report.get("splits", {}).items()}
    return {"directory": str(directory), "settings": settings, "metrics": metrics, "intervals": intervals}


def setting_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else format_number(value)


def comparison_table(directories: Sequence[str | Path], all_settings: bool = False) -> tuple[list[str], list[list[str]]]:
    """Runs side by side: the settings (those that differ, unless ``all_settings``) and every
    scalar metric of every split, with its 95% interval where the report has one."""
    runs = [read_run(d) for d in directories]
    columns = ["", *[r["directory"] for r in runs]]
    rows: list[list[str]] = []
    for key in COMPARED_SETTINGS:
        values = [setting_text(r["settings"].get(key)) for r in runs]
        if all_settings or len(set(values)) > 1 or key in ("task", "model"):
            rows.append([key, *values])
    splits = list(dict.fromkeys(s for r in runs for s in r["metrics"]))
    for split in splits:
        keys = list(dict.fromkeys(k for r in runs for k, v in scalar_metrics(r["metrics"].get(split, {}))
                                  if not isinstance(v, str)))
        for key in keys:
            cells = []
            for r in runs:
                value = metric_at(r["metrics"].get(split, {}), key)
                interval = r["intervals"].get(split, {}).get(key)
                text = "" if value is None else markdown_text(format_number(value))
                if interval:
                    text += f" [{interval['low']:.4f}, {interval['high']:.4f}]"
                cells.append(Markdown(text))
            rows.append([f"{split} {key}", *cells])
    return columns, rows
