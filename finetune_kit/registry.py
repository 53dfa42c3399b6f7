"""Task plugins, found through the ``finetune_kit.tasks`` entry-point group."""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points

from .task import Task, TaskError

ENTRY_POINT_GROUP = "finetune_kit.tasks"


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


def get_task_class(name: str) -> type[Task]:
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
    missing = [
        attr
        for attr in ("name", "preprocess", "collate", "build_model", "postprocess", "compute_metrics")
        if not hasattr(cls, attr)
    ]
    if missing:
        raise TaskError(
            f"task '{name}' ({eps[name].value}) does not implement the Task contract: "
            f"missing {', '.join(missing)}"
        )
    return cls
