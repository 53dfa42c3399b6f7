"""Task plugins, found through the ``finetune_kit.tasks`` entry-point group."""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .report_content import ReportContent, Section, metrics_content, metrics_table
from .task import TaskBase, TaskError
from .task_options import declaration_problems

ENTRY_POINT_GROUP = "finetune_kit.tasks"

# What every task class has: its name, its default metric, and TaskBase's abstract methods.
REQUIRED_MEMBERS = ("name", "default_metric", "setup", "validate", "state", "load_state", "build_model",
                    "preprocess", "collate", "to_examples", "postprocess", "compute_metrics")


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def available_tasks() -> list[str]:
    """Names of every registered task, built-in and third-party, sorted."""
    return sorted(_entry_points())


def task_origin(name: str) -> str:
    """The distribution that registers ``name`` (e.g. ``finetune-kit``)."""
    ep = _entry_points()[name]
    return ep.dist.name if ep.dist is not None else "?"


def get_task_class(name: str) -> type[TaskBase]:
    """The class registered under ``name``; an unknown name gets suggestions and the list."""
    eps = _entry_points()
    if name not in eps:
        names = sorted(eps)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise TaskError(
            f"unknown task '{name}'.{hint} Available tasks: {', '.join(names) or '(none installed)'}"
        )
    cls = eps[name].load()
    missing = missing_members(cls)
    if missing:
        raise TaskError(
            f"task '{name}' ({eps[name].value}) does not implement the Task contract: "
            f"missing {', '.join(missing)}"
        )
    task_class = as_task_class(cls)
    problems = declaration_problems(task_class.task_options)
    if problems:
        raise TaskError(f"task '{name}' ({eps[name].value}) declares its task_options wrongly: {'; '.join(problems)}")
    return task_class


def missing_members(cls: object) -> list[str]:
    """The required members of the contract (TaskBase's abstract methods, its name and default
    metric) that ``cls`` lacks, in the contract's order."""
    if not isinstance(cls, type):
        return list(REQUIRED_MEMBERS)
    abstract = getattr(cls, "__abstractmethods__", frozenset())
    return [member for member in REQUIRED_MEMBERS if member in abstract or not hasattr(cls, member)]


def as_task_class(cls: type) -> type[TaskBase]:
    """A plugin class as a TaskBase: itself, or a subclass of it adapting an older plugin. A
    class written before TaskBase (one that has the required members only) gets the defaults of
    the optional members it lacks; one that reports through ``report_sections`` gets ``report``."""
    members = {"report": report_from_sections} if reports_by_sections(cls) else {}
    if issubclass(cls, TaskBase) and not members:
        return cls
    bases = (cls,) if issubclass(cls, TaskBase) else (cls, TaskBase)
    return type(cls.__name__, bases, {"__module__": cls.__module__, "__doc__": cls.__doc__, **members})


def reports_by_sections(cls: type) -> bool:
    """Whether ``cls`` gives its report as the dict of ``report_sections`` instead of ``report``."""
    return hasattr(cls, "report_sections") and getattr(cls, "report", TaskBase.report) is TaskBase.report


def report_from_sections(task: TaskBase, predictions: list[dict[str, Any]], raw: Any,
                         metrics: dict[str, Any]) -> ReportContent:
    """``report`` of an older plugin, from the dict its ``report_sections`` returns (headline,
    bootstrap, resampling_unit, sections; empty for a table of the metrics). Its summary is a
    table of every metric, and blocks flagged ``summarised`` (shown by the ``write_report`` such
    a plugin has, which nothing calls now) stay in their sections."""
    content = task.report_sections(predictions, raw, metrics)
    if not content:
        return metrics_content(metrics)
    sections = [Section(s["title"], [{k: v for k, v in block.items() if k != "summarised"} for block in s["blocks"]],
                        s.get("note")) for s in content.get("sections") or []]
    return ReportContent(summary=[metrics_table(metrics)], headline=list(content.get("headline", [])),
                         bootstrap=list(content.get("bootstrap", [])),
                         resampling_unit=content.get("resampling_unit", "example"), sections=sections)
