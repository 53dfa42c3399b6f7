"""Task plugins, found through the ``finetune_kit.tasks`` entry-point group."""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points

from .task import TaskBase, TaskError

ENTRY_POINT_GROUP = "finetune_kit.tasks"

# What every task class has: its name, its default metric, and TaskBase's abstract methods.
REQUIRED_MEMBERS = ("name", "default_metric", "setup", "validate", "state", "load_state", "build_model",
                    "preprocess", "collate", "to_examples", "postprocess", "compute_metrics", "write_report")


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
    return as_task_class(cls)


def missing_members(cls: object) -> list[str]:
    """The required members of the contract (TaskBase's abstract methods, its name and default
    metric) that ``cls`` lacks, in the contract's order."""
    if not isinstance(cls, type):
        return list(REQUIRED_MEMBERS)
    abstract = getattr(cls, "__abstractmethods__", frozenset())
    return [member for member in REQUIRED_MEMBERS if member in abstract or not hasattr(cls, member)]


def as_task_class(cls: type) -> type[TaskBase]:
    """A plugin class as a TaskBase: itself, or, for a class written before TaskBase (one that
    has the required members only), a subclass of it and TaskBase, which adds the defaults of
    the optional members it lacks."""
    if issubclass(cls, TaskBase):
        return cls
    return type(cls.__name__, (cls, TaskBase), {"__module__": cls.__module__, "__doc__": cls.__doc__})
