from importlib.metadata import EntryPoint

import pytest

from finetune_kit import registry
from finetune_kit.task import Task, TaskError


def test_builtin_tasks_are_registered_through_entry_points():
    names = registry.available_tasks()
    assert {"text-classification", "pair-classification", "token-classification"} <= set(names)
    cls = registry.get_task_class("pair-classification")
    assert cls.__module__ == "finetune_kit_tasks.text_classification"
    assert registry.task_origin("text-classification") == "finetune-kit"


def test_builtin_tasks_follow_the_contract():
    from finetune_kit.task import TaskSettings

    for name in ("text-classification", "pair-classification", "token-classification"):
        task = registry.get_task_class(name)(TaskSettings())
        assert isinstance(task, Task)
        assert task.name == name


def test_unknown_task_gets_suggestion_and_list():
    with pytest.raises(TaskError, match=r"unknown task 'pair-clasification'. Did you mean 'pair-classification'\? "
                                        r"Available tasks: .*text-classification"):
        registry.get_task_class("pair-clasification")


def test_plugin_that_breaks_the_contract_is_named(monkeypatch):
    broken = EntryPoint(name="broken", value="collections:OrderedDict", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"broken": broken})
    with pytest.raises(TaskError, match=r"task 'broken' \(collections:OrderedDict\) does not implement the Task "
                                        r"contract: missing name, default_metric, setup, validate, state, "
                                        r"load_state, build_model, preprocess"):
        registry.get_task_class("broken")
