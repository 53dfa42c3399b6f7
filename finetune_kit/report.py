"""Evaluation reports: ``metrics.json``, ``report.json``, ``report.md``, ``report.html`` and PNG plots.

One evaluation pass feeds everything. For each split the task's ``report(predictions, raw,
metrics)`` gives its content (``report_content.ReportContent``): summary blocks, headline
metrics with the per-example statistics the bootstrap resamples, and sections. This module adds
the confidence intervals, the training curves from ``train_log.jsonl`` and the run's header, and
writes the same content three ways:

- ``report.json``: every number, as computed (the HTML and Markdown are rendered from it);
- ``report.html``: one self-contained page (``report_html``);
- ``report.md``: the same in Markdown (``report_markdown``).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, atomic_write_text
from .markdown import markdown_table
from .report_content import (
    CHART_KINDS,
    Block,
    ReportContent,
    Section,
    bar_chart,
    curve,
    heatmap,
    marked,
    marked_tokens,
    metric_at,
    metrics_content,
    report_blocks,
    table,
)
from .report_html import render_html
from .report_markdown import render_markdown
from .stats import DEFAULT_RESAMPLES, bootstrap, interval_settings
from .task import Task

PLOTS_DIR = "plots"
REPORT_FORMAT_VERSION = 2  # 2: each split has its summary blocks (``summary``) before its sections

# Besides its own names, the block constructors, ``section`` and ``markdown_table``: plugins written
# for the dict-returning ``report_sections`` import them from here (``registry.as_task_class`` turns
# their dicts into a ``ReportContent``); a task today imports its blocks from ``report_content``.
__all__ = ["ReportSettings", "split_report", "training_section", "build_report", "write_evaluation",
           "bar_chart", "curve", "heatmap", "marked", "marked_tokens", "table", "section", "markdown_table"]


@dataclass(frozen=True)
class ReportSettings:
    """How reports are made (none of it changes a metric)."""

    # Write PNG plots and embed them in report.html (off: the charts' numbers appear as tables).
    plots: bool = True
    # Bootstrap resamples for the confidence intervals; 0 computes none.
    bootstrap_resamples: int = DEFAULT_RESAMPLES
    # Seed of the bootstrap's random generator.
    seed: int = 42


def check_estimate(key: str, estimate: float, value: Any) -> None:
    """The bootstrap's statistics must reproduce the metric they give an interval for; a task
    whose statistics disagree with its metrics gets a warning, not a silently shifted interval."""
    if isinstance(value, (int, float)) and abs(estimate - value) > 1e-6:
        warnings.warn(f"report: the bootstrap statistics of '{key}' give {estimate:.6f} but the metric is "
                      f"{value:.6f}; its interval does not describe the metric", stacklevel=3)


def split_report(task: Task, predictions: list[dict[str, Any]] | None, raw: Any, metrics: dict[str, Any],
                 settings: ReportSettings | None = None) -> dict[str, Any]:
    """The report of one split (its entry in report.json): its metrics, the task's content with
    bootstrap intervals for the headline figures. Without predictions: a table of the metrics."""
    settings = settings or ReportSettings()
    content: ReportContent = (task.report(predictions, raw, metrics) if predictions is not None
                              else metrics_content(metrics))
    intervals = bootstrap(content.bootstrap, settings.bootstrap_resamples, settings.seed)
    headline = []
    for label, key in content.headline:
        value = metric_at(metrics, key)
        if value is None:
            continue
        row = {"metric": label, "key": key, "value": value}
        if key in intervals:
            check_estimate(key, intervals[key]["estimate"], value)
            row.update(low=intervals[key]["low"], high=intervals[key]["high"])
        headline.append(row)
    return {"metrics": metrics, "headline": headline,
            "intervals": {**interval_settings(settings.bootstrap_resamples, settings.seed, content.resampling_unit),
                          "metrics": intervals} if intervals else None,
            "summary": list(content.summary),
            "sections": [s.to_json() for s in content.sections]}


def section(title: str, blocks: list[Block], note: str | None = None) -> dict[str, Any]:
    """A section as such an older plugin returns it."""
    return Section(title, blocks, note).to_json()


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


def training_section(records: list[dict[str, Any]]) -> Section | None:
    """Curves of the training loss, the learning rate and the validation metrics per evaluation,
    and the run's summary, from the records of ``train_log.jsonl``."""
    train = [r for r in records if r.get("event") == "train"]
    evaluations = [r for r in records if r.get("event") == "evaluate"]
    end = next((r for r in reversed(records) if r.get("event") == "train_end"), None)
    if not train and not evaluations:
        return None
    blocks: list[Block] = []
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
    return Section("Training", blocks)


def build_report(task: Task, splits: dict[str, dict[str, Any]], header: dict[str, Any],
                 log_path: str | Path | None = None) -> dict[str, Any]:
    """The whole report (what ``report.json`` holds): header, one entry per split, training."""
    training = training_section(read_training_log(log_path))
    return {"format_version": REPORT_FORMAT_VERSION, "title": f"Evaluation report: {header.get('task', task.name)}",
            "header": {k: v for k, v in header.items() if v not in (None, "")}, "splits": splits,
            "training": training.to_json() if training else None}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "plot"


def assign_plot_files(report: dict[str, Any]) -> list[Block]:
    """Give every chart block a unique ``plot`` file name under plots/; returns the charts."""
    charts, used = [], set()
    for split, block in report_blocks(report):
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
    atomic_write_text(directory / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(directory / "report.json", json.dumps(_json_safe(report), indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(directory / "report.html", render_html(report, images))
    atomic_write_text(directory / "report.md", render_markdown(report))
    return report
