"""The options of ``finetune-kit train``: one per run setting, made from its declaration on
``TrainConfig`` (``config.setting``), and the shortcut flags that the run's task declares for
its options (``TaskOption.shortcut``), which typer passes through among the arguments."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any, Optional

import typer

from .config import ConfigError, Setting, apply_overrides, declared_settings, read_yaml
from .registry import available_tasks, get_task_class
from .task import task_shortcuts
from .task_options import TaskOption


# Options that are no setting reach ``train`` among its arguments: the task's shortcuts.
PASS_UNKNOWN_OPTIONS = {"allow_extra_args": True, "ignore_unknown_options": True}


def setting_option(setting: Setting) -> inspect.Parameter:
    """``setting`` as a keyword parameter that typer makes an option: None when not given (the
    YAML file, the overrides or the default apply), with the help of its declaration. A list is
    given comma-separated, a mapping as repeated KEY=VALUE."""
    value_type = {list: str, dict: list[str]}.get(setting.value_type, setting.value_type)
    option = typer.Option(None, *setting.options, help=setting.help_text, metavar=setting.metavar)
    return inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=Optional[value_type])


def with_setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` an option for every declared setting, taken by its ``**`` parameter;
    typer reads a command's parameters from its signature."""
    hints = typing.get_type_hints(command)
    signature = inspect.signature(command)
    kept = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD]
    parameters = [*kept, *(setting_option(s) for s in declared_settings())]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {**{p.name: p.annotation for p in parameters}, "return": hints.get("return")}
    return command


def train_option_names() -> list[str]:
    """Every long option of ``train``."""
    names = [name for s in declared_settings() for decl in s.options for name in decl.split("/")]
    return [name for name in names if name.startswith("--")] + ["--help"]


def task_option_values(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` task options (``-o``), each value read as YAML reads it."""
    return apply_overrides({}, [f"task_options.{item}" for item in items])["task_options"]


def _comma_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def given_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings given as options, by field name, as TrainConfig takes them."""
    value_types = {s.name: s.value_type for s in declared_settings()}
    settings: dict[str, Any] = {}
    for name, value in given.items():
        if value is None or value == []:
            continue
        if value_types[name] is list:
            value = _comma_list(value)
        elif value_types[name] is dict:
            value = task_option_values(value)
        settings[name] = value
    return settings


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1


def is_config_file(token: str) -> bool:
    return "=" not in token and token.endswith((".yaml", ".yml"))


def task_of_run(task: str | None, tokens: list[str]) -> str | None:
    """The run's task: ``--task``, else a ``task=NAME`` override among ``tokens``, else the
    CONFIG.yaml file's (None: none names one)."""
    if task is None:
        task = apply_overrides({}, [t for t in tokens if "=" in t and not _is_option(t)]).get("task")
    if task is None:
        config_file = next((t for t in tokens if is_config_file(t)), None)
        task = read_yaml(config_file).get("task") if config_file else None
    return task if isinstance(task, str) else None


def shortcut_owners(flag: str) -> list[str]:
    """The registered tasks that declare the shortcut ``flag``."""
    owners = []
    for name in available_tasks():
        try:
            shortcuts = task_shortcuts(get_task_class(name))
        except Exception:  # noqa: BLE001 - a broken plugin must not hide the others
            continue
        if flag in shortcuts:
            owners.append(name)
    return owners


def unknown_option(flag: str, task: str | None, shortcuts: dict[str, TaskOption]) -> str:
    """Why ``flag`` is refused: another task's shortcut, or no option at all (with the closest
    option or shortcut of the run)."""
    owners = [name for name in shortcut_owners(flag) if name != task]
    if owners:
        whose = f"{flag}: a shortcut of {' and '.join(owners)}"
        return f"{whose}, not of {task}" if task else f"{whose}; give --task {owners[0]}"
    close = difflib.get_close_matches(flag, [*train_option_names(), *shortcuts], n=1)
    return f"{flag}: no such option" + (f" (did you mean {close[0]}?)" if close else "")


def split_shortcuts(tokens: list[str], task: str | None) -> tuple[dict[str, Any], list[str]]:
    """The task options set by the shortcut flags among ``tokens`` (``--FLAG``; ``--NAME VALUE``
    or ``--NAME=VALUE`` with the value read like a ``-o`` value), and the other tokens; ``task``
    is the ``--task`` given, if any."""
    if not any(_is_option(t) for t in tokens):
        return {}, tokens
    task = task_of_run(task, tokens)
    shortcuts = task_shortcuts(get_task_class(task)) if task else {}
    values: dict[str, Any] = {}
    rest: list[str] = []
    tokens = list(tokens)
    while tokens:
        token = tokens.pop(0)
        if not _is_option(token):
            rest.append(token)
            continue
        flag, has_value, value = token.partition("=")
        option = shortcuts.get(flag)
        if option is None:
            raise ConfigError(unknown_option(flag, task, shortcuts))
        if option.kind == "flag":
            if has_value:
                raise ConfigError(f"{flag}: a flag, it takes no value (-o {option.name}=VALUE sets one)")
            values[option.name] = True
            continue
        if not has_value:
            if not tokens or tokens[0].startswith("--"):
                allowed = f"; give {option.allowed()}" if option.allowed() else ""
                raise ConfigError(f"{flag}: a value is missing{allowed}")
            value = tokens.pop(0)
        values.update(task_option_values([f"{option.name}={value}"]))
    return values, rest
