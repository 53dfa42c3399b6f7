"""What ``finetune-kit tasks NAME`` says about one task: its defaults and its options.

Everything shown is read from the task class's declarations, so a plugin's task is described
exactly as a built-in one.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .task import TaskBase, TaskSettings, greater_is_better
from .task_options import TaskOption, value_text

def _head_learning_rate(task_class: type[TaskBase]) -> str:
    declared = task_class.default_head_learning_rate
    if isinstance(declared, property):  # the task decides when it sees the model
        why = (declared.__doc__ or "").strip().splitlines()
        return "set by the task at run time" + (f": {why[0]}" if why else "")
    return "the encoder's" if declared is None else str(declared)


def task_facts(task_class: type[TaskBase]) -> list[tuple[str, str]]:
    """(what, value) lines: the defaults a run of the task takes where it sets nothing."""
    metric = task_class.default_metric
    direction = "higher" if greater_is_better(task_class, metric) else "lower"  # reads class declarations only
    columns = {"text_column": TaskSettings.text_column, "text_pair_column": TaskSettings.text_pair_column,
               "label_column": TaskSettings.label_column} | task_class.default_columns
    file_format = task_class.default_file_format
    facts = [
        ("default metric", f"{metric} ({direction} is better)"),
        ("default columns", ", ".join(f"{column}={name}" for column, name in columns.items())),
        ("default max_length", str(task_class.default_max_length)),
        ("default file format", file_format or "none (a file's extension must say its format)"),
        ("default head learning rate", _head_learning_rate(task_class)),
        ("pipeline tag", task_class.pipeline_tag or "none"),
    ]
    if task_class.evaluate_before_training:
        facts.append(("evaluate before training", "yes (validation and test are scored before training too)"))
    return facts


def facts_text(task_class: type[TaskBase]) -> str:
    """The facts of ``task_facts``, one a line, their values aligned."""
    facts = task_facts(task_class)
    width = max(len(what) for what, _ in facts)
    return "\n".join(f"{what:<{width}}  {value}" for what, value in facts)


def options_table(options: tuple[TaskOption, ...]) -> Table:
    """One row per option: name, default, allowed values, ``finetune-kit train`` shortcut, help."""
    table = Table("option", "default", "allowed", "shortcut", "help")
    for option in options:
        allowed = option.allowed() + (" (or null)" if option.optional and option.allowed() else "")
        cells = (option.name, value_text(option.default), allowed, option.shortcut or "", option.help)
        table.add_row(*map(Text, cells))  # as written: no rich markup
    return table
