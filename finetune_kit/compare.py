"""``finetune-kit compare``: runs and evaluations side by side, from what they wrote.

Each directory gives its settings (``finetune_kit.json`` there, or in the model directory its
evaluation report names), its metrics (``metrics.json``) and, where report.json has them, the
95% intervals of its headline metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import COMPARED_SETTINGS
from .markdown import Markdown, format_number, markdown_text
from .report_content import metric_at, scalar_metrics


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
