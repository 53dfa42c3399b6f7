"""Task options: what a task declares it takes (``-o name=value``), and how a value is checked.

A task lists its options in ``TaskBase.task_options``. ``TaskBase.read_options`` checks the values
a run gives against them, ``finetune-kit tasks NAME`` shows them, and a declared ``shortcut``
becomes a flag of ``finetune-kit train``. The wording of a refused value lives here, once per kind
of option, so that every task, built-in or plugin, words the same mistake the same way:
``task_options.NAME: VALUE is not allowed; give ...`` (or ``choose ...``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("flag", "int", "number", "choice", "any")


def value_text(value: Any) -> str:
    """A value as it is written after ``-o name=`` (YAML): true, false, null, 0.15, token."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bound_text(bound: float) -> str:
    return format(bound, "g")  # 0.0 -> "0", 1e-3 -> "0.001", inf -> "inf"


@dataclass(frozen=True)
class TaskOption:
    """One option of a task (``-o name=value``)."""

    name: str
    default: Any
    help: str  # one line
    # "flag" (true/false) | "int" (whole number >= minimum) | "number" (finite, in [minimum, maximum])
    # | "choice" (one of choices) | "any" (the task checks it itself)
    kind: str = "any"
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None allowed (e.g. "derived from max_length")
    shortcut: str | None = None  # a flag of `finetune-kit train`: "--crf" (kind "flag": sets true) or "--masking VALUE"
    # kind "number": the bound itself is refused, e.g. a weight in (0, inf)
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def allowed(self) -> str:
        """The values the option takes, in words: "true or false", "a whole number >= 0",
        "a number in (0, 1]", "first or mean"; empty for kind "any"."""
        if self.kind == "flag":
            return "true or false"
        if self.kind == "choice":
            return " or ".join(map(value_text, self.choices or ()))
        if self.kind == "int":
            low, high = self.minimum, self.maximum
            if low is not None and high is not None:
                return f"a whole number in [{_bound_text(low)}, {_bound_text(high)}]"
            if high is not None:
                return f"a whole number <= {_bound_text(high)}"
            return "a whole number" + (f" >= {_bound_text(low)}" if low is not None else "")
        if self.kind == "number":
            if self.minimum is None and self.maximum is None:
                return "a number"
            low = "(-inf" if self.minimum is None else ("(" if self.exclusive_minimum else "[") + _bound_text(self.minimum)
            high = "inf)" if self.maximum is None else _bound_text(self.maximum) + (")" if self.exclusive_maximum else "]")
            return f"a number in {low}, {high}"
        return ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one the option takes (None only for an optional one, or kind "any")."""
        if self.kind == "any":
            return True
        if value is None:
            return self.optional
        if self.kind == "flag":
            return isinstance(value, bool)
        if self.kind == "choice":
            # True == 1 in Python; a flag-like choice must be given as true or false
            return any(value == choice and isinstance(value, bool) == isinstance(choice, bool)
                       for choice in self.choices or ())
        if self.kind in ("int", "number"):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not (whole or (self.kind == "number" and isinstance(value, float) and math.isfinite(value))):
                return False
            return self._above_minimum(value) and self._below_maximum(value)
        return False

    def _above_minimum(self, value: float) -> bool:
        if self.minimum is None:
            return True
        return value > self.minimum if self.exclusive_minimum else value >= self.minimum

    def _below_maximum(self, value: float) -> bool:
        if self.maximum is None:
            return True
        return value < self.maximum if self.exclusive_maximum else value <= self.maximum

    def error(self, value: Any) -> str | None:
        """The one-line message refusing ``value``; None when the option takes it."""
        if self.accepts(value):
            return None
        verb = "choose" if self.kind == "choice" else "give"
        return f"task_options.{self.name}: {value!r} is not allowed; {verb} {self.allowed()}"


def unknown_options_error(task_name: str, given: Iterable[str], declared: Iterable[str]) -> str | None:
    """The one-line message naming the options given that ``task_name`` does not declare; None
    when there are none."""
    declared = sorted(declared)
    unknown = sorted(set(given) - set(declared))
    if not unknown:
        return None
    known = f"known: {', '.join(declared)}" if declared else "it takes no options"
    return f"task_options: {', '.join(unknown)} not known to {task_name} ({known})"


def declaration_problems(options: Iterable[TaskOption]) -> list[str]:
    """What is wrong with a task's option declarations, one line each (empty: nothing): a name
    or shortcut given twice, a shortcut that is no ``--flag``, an unknown kind, a choice without
    choices, a help that is not one line, a default the option itself refuses."""
    options = tuple(options)
    problems = [f"option {name!r} is declared {count} times"
                for name, count in Counter(o.name for o in options).items() if count > 1]
    problems += [f"shortcut {flag!r} is declared {count} times"
                 for flag, count in Counter(o.shortcut for o in options if o.shortcut).items() if count > 1]
    for option in options:
        where = f"option {option.name!r}"
        if not option.name.isidentifier():
            problems.append(f"{where}: the name must be a Python identifier (letters, digits, _)")
        if option.kind not in KINDS:
            problems.append(f"{where}: kind {option.kind!r} is not one of {', '.join(KINDS)}")
            continue
        if option.shortcut is not None and not (option.shortcut.startswith("--") and len(option.shortcut) > 2):
            problems.append(f"{where}: shortcut {option.shortcut!r} must start with '--'")
        if (option.kind == "choice") != bool(option.choices):
            problems.append(f"{where}: choices go with kind 'choice', and a choice needs them")
        bounded = (option.minimum, option.maximum) != (None, None)
        if bounded and option.kind not in ("int", "number"):
            problems.append(f"{where}: minimum and maximum go with kind 'int' or 'number'")
        if (option.exclusive_minimum or option.exclusive_maximum) and option.kind != "number":
            problems.append(f"{where}: exclusive bounds go with kind 'number'")
        if not option.help.strip() or "\n" in option.help:
            problems.append(f"{where}: help must be one line")
        refused = option.error(option.default)
        if refused:
            problems.append(f"{where}: the default is refused ({refused})")
    return problems
