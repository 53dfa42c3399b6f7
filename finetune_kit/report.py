"""Evaluation output: ``metrics.json`` and a readable ``report.md`` beside it.

The per-split sections come from the task (``Task.write_report``); this module adds the run's
header and writes both files atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .modeling import atomic_write_text
from .task import Task


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def per_label_table(per_label: dict[str, dict[str, Any]]) -> str:
    rows = [[label, m["precision"], m["recall"], m["f1"], m["support"]] for label, m in per_label.items()]
    return markdown_table(["label", "precision", "recall", "F1", "support"], rows)


def confusion_table(confusion: dict[str, Any]) -> str:
    labels = confusion["labels"]
    rows = [[f"**{gold}**", *counts] for gold, counts in zip(labels, confusion["matrix"])]
    return markdown_table(["gold \\ predicted", *labels], rows)


def render_report(task: Task, metrics: dict[str, dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"# Evaluation report: {header.get('task', task.name)}", ""]
    for key, value in header.items():
        if value not in (None, ""):
            lines.append(f"- **{key.replace('_', ' ')}**: {value}")
    lines.append("")
    for split, split_metrics in metrics.items():
        lines.append(task.write_report(split_metrics, split))
        lines.append("")
    return "\n".join(lines)


def write_evaluation(
    directory: str | Path, task: Task, metrics: dict[str, dict[str, Any]], header: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``report.md``; returns their paths."""
    directory = Path(directory)
    metrics_path, report_path = directory / "metrics.json", directory / "report.md"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(report_path, render_report(task, metrics, header))
    return metrics_path, report_path
