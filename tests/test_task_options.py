"""Task options: every task declares its own (``task_options``), the core checks ``-o`` values
against the declarations with one wording per kind, and ``finetune-kit tasks NAME`` lists them."""

from __future__ import annotations

import math
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from finetune_kit import registry
from finetune_kit.cli import app
from finetune_kit.task import (
    TaskError,
    TaskOption,
    TaskSettings,
    require_choice,
    require_flag,
    require_whole_number,
    task_shortcuts,
)
from finetune_kit.task_options import declaration_problems, value_text
from tests.test_task_contract import MinimalTask

runner = CliRunner()

# The defaults each built-in task had before it declared its options: they must not change.
DEFAULTS = {
    "text-classification": {"pooling": "transformers"},  # cls until the transformers head became the default
    "pair-classification": {"pooling": "transformers"},
    "token-classification": {"head": "transformers", "crf": False, "subword_labels": "first", "scheme": "auto", "strict_tags": False,
                             "stride": None},
    "span-ner": {"max_span_width": 8, "word_pooling": "first", "decoding": "nested", "per_type_threshold": False,
                 "null_weight": 1.0, "null_sample": 1.0, "ffnn_dim": 150, "width_dim": 20, "stride": None,
                 "threshold": None},
    "question-answering": {"head": "transformers", "doc_stride": None, "max_answer_length": 30, "n_best": 20, "max_query_length": None,
                           "with_negatives": "auto", "skip_bad_answers": False, "no_answer_threshold": None},
    "masked-lm": {"masking": "token", "mask_rate": 0.15, "mask_share": 0.8, "random_share": 0.1,
                  "random_tokens": "uniform", "span_p": 0.2, "max_span_words": 10, "sbo": False,
                  "head": "transformers", "packing": "documents", "top_k": 5},
}


def make(task: str, **options: Any) -> Any:
    return registry.get_task_class(task)(TaskSettings(options=options))


def refusal(task: str, **options: Any) -> str:
    with pytest.raises(TaskError) as error:
        make(task, **options)
    return str(error.value)


# -- the built-in declarations ------------------------------------------------------------------

@pytest.mark.parametrize("task", sorted(DEFAULTS))
def test_builtin_declarations_are_valid_and_keep_their_defaults(task):
    declared = registry.get_task_class(task).task_options
    assert declaration_problems(declared) == []
    assert {option.name: option.default for option in declared} == DEFAULTS[task]
    assert all(option.error(option.default) is None for option in declared)  # each default passes its check
    assert all(option.help.strip() and "\n" not in option.help for option in declared)


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "span-ner", "masked-lm"])
def test_a_task_reads_its_declared_defaults(task):
    assert make(task).options == DEFAULTS[task]


def test_values_given_replace_the_defaults():
    options = make("span-ner", decoding="flat", threshold=0.3, stride=0).options
    assert options == {**DEFAULTS["span-ner"], "decoding": "flat", "threshold": 0.3, "stride": 0}


def test_question_answering_derives_its_null_defaults_from_max_length():
    task = registry.get_task_class("question-answering")(TaskSettings(max_length=384))
    assert (task.options["doc_stride"], task.options["max_query_length"]) == (128, 64)
    task = registry.get_task_class("question-answering")(TaskSettings(max_length=384, options={"doc_stride": 0}))
    assert task.options["doc_stride"] == 0


def test_the_shortcuts_of_the_builtin_tasks():
    assert {flag: option.name for flag, option in task_shortcuts(registry.get_task_class("token-classification")).items()} \
        == {"--crf": "crf"}
    assert {flag: option.name for flag, option in task_shortcuts(registry.get_task_class("masked-lm")).items()} \
        == {"--masking": "masking"}
    assert task_shortcuts(registry.get_task_class("span-ner")) == {}


# -- the messages, one wording per kind (as the tasks worded them before) ------------------------

@pytest.mark.parametrize(("task", "options", "message"), [
    ("span-ner", {"colour": "red", "beam": 2}, "task_options: beam, colour not known to span-ner (known: decoding, "
     "ffnn_dim, max_span_width, null_sample, null_weight, per_type_threshold, stride, threshold, width_dim, "
     "word_pooling)"),
    ("text-classification", {"crf": True}, "task_options: crf not known to text-classification (known: pooling)"),
    ("masked-lm", {"masking": "x"}, "task_options.masking: 'x' is not allowed; choose token or whole-word or span"),
    ("span-ner", {"decoding": "both"}, "task_options.decoding: 'both' is not allowed; choose nested or flat"),
    ("token-classification", {"crf": "yes"}, "task_options.crf: 'yes' is not allowed; give true or false"),
    ("token-classification", {"strict_tags": 1}, "task_options.strict_tags: 1 is not allowed; give true or false"),
    ("span-ner", {"max_span_width": 0}, "task_options.max_span_width: 0 is not allowed; give a whole number >= 1"),
    ("span-ner", {"ffnn_dim": 1.5}, "task_options.ffnn_dim: 1.5 is not allowed; give a whole number >= 1"),
    ("masked-lm", {"top_k": True}, "task_options.top_k: True is not allowed; give a whole number >= 1"),
    ("token-classification", {"stride": -1}, "task_options.stride: -1 is not allowed; give a whole number >= 0"),
    ("question-answering", {"doc_stride": "big"},
     "task_options.doc_stride: 'big' is not allowed; give a whole number >= 0"),
    ("question-answering", {"n_best": None}, "task_options.n_best: None is not allowed; give a whole number >= 1"),
    ("span-ner", {"null_weight": 0}, "task_options.null_weight: 0 is not allowed; give a number in (0, inf)"),
    ("span-ner", {"null_sample": 1.5}, "task_options.null_sample: 1.5 is not allowed; give a number in (0, 1]"),
    ("span-ner", {"threshold": 1}, "task_options.threshold: 1 is not allowed; give a number in (0, 1)"),
    ("span-ner", {"threshold": False}, "task_options.threshold: False is not allowed; give a number in (0, 1)"),
    ("question-answering", {"no_answer_threshold": "high"},
     "task_options.no_answer_threshold: 'high' is not allowed; give a number"),
    ("question-answering", {"with_negatives": "maybe"},
     "task_options.with_negatives: 'maybe' is not allowed; choose auto or true or false"),
    ("question-answering", {"with_negatives": 1},  # 1 == True in Python, but it is no flag
     "task_options.with_negatives: 1 is not allowed; choose auto or true or false"),
    ("text-classification", {"pooling": "max"},
     "task_options.pooling: 'max' is not allowed; choose transformers or cls or mean or pooler"),
])
def test_a_bad_value_is_refused_in_one_line(task, options, message):
    assert refusal(task, **options) == message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_number_option_must_be_finite(value):
    assert refusal("question-answering", no_answer_threshold=value).endswith("is not allowed; give a number")


def test_the_task_specific_checks_stay_in_the_task():
    assert refusal("masked-lm", sbo=True) == ("task_options.sbo: the span boundary objective needs span masking "
                                              "(--masking span)")
    assert refusal("masked-lm", mask_rate=1.5) == "task_options: mask_rate: 1.5 must be between 0 and 1"
    assert refusal("token-classification", scheme="BIOX").startswith("task_options.scheme: ")


def test_optional_options_take_null_and_the_bounds_they_allow():
    assert make("span-ner", threshold=None, stride=None, null_sample=1).options["null_sample"] == 1
    assert make("question-answering", no_answer_threshold=-2.5, with_negatives=False).options["with_negatives"] is False


def test_the_helpers_of_older_plugins_word_a_refusal_as_the_declarations_do():
    with pytest.raises(TaskError, match=r"^task_options.mode: 'x' is not allowed; choose a or b$"):
        require_choice({"mode": "x"}, "mode", ("a", "b"))
    with pytest.raises(TaskError, match=r"^task_options.on: 'yes' is not allowed; give true or false$"):
        require_flag({"on": "yes"}, "on")
    with pytest.raises(TaskError, match=r"^task_options.k: -1 is not allowed; give a whole number >= 0$"):
        require_whole_number({"k": -1}, "k", minimum=0)
    require_whole_number({"k": None}, "k", optional=True)


def test_values_are_written_as_after_dash_o():
    assert [value_text(v) for v in (None, True, False, 0.15, "span")] == ["null", "true", "false", "0.15", "span"]


# -- a plugin declares options (and a shortcut) without editing the core ------------------------

class BeamTask(MinimalTask):
    """A test task with options of every kind."""

    name: ClassVar[str] = "beam-search"
    description: ClassVar[str] = "A test task"
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("beams", 4, "beams kept", kind="int", minimum=1, maximum=16),
        TaskOption("greedy", False, "no beams at all", kind="flag", shortcut="--greedy"),
        TaskOption("temperature", 1.0, "softmax temperature", kind="number", minimum=0, exclusive_minimum=True),
        TaskOption("order", "best", "the order of the outputs", kind="choice", choices=("best", "input"),
                   shortcut="--order"),
        TaskOption("note", None, "anything at all"),
    )

    def __init__(self, settings: TaskSettings) -> None:
        super().__init__(settings)
        self.options = self.read_options()


class NoOptionsTask(MinimalTask):
    name: ClassVar[str] = "no-options"

    def __init__(self, settings: TaskSettings) -> None:
        super().__init__(settings)
        self.options = self.read_options()


@pytest.fixture()
def plugin_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    builtin = registry._entry_points()
    plugins = {name: EntryPoint(name=name, value=f"tests.test_task_options:{cls}", group=registry.ENTRY_POINT_GROUP)
               for name, cls in (("beam-search", "BeamTask"), ("no-options", "NoOptionsTask"))}
    monkeypatch.setattr(registry, "_entry_points", lambda: {**builtin, **plugins})


def test_a_plugin_task_is_checked_by_the_core(plugin_tasks):
    task_class = registry.get_task_class("beam-search")
    task = task_class(TaskSettings(options={"beams": 8, "note": [1, 2]}))
    assert task.options == {"beams": 8, "greedy": False, "temperature": 1.0, "order": "best", "note": [1, 2]}
    for options, message in (
        ({"beams": 17}, "task_options.beams: 17 is not allowed; give a whole number in [1, 16]"),
        ({"greedy": "no"}, "task_options.greedy: 'no' is not allowed; give true or false"),
        ({"temperature": 0}, "task_options.temperature: 0 is not allowed; give a number in (0, inf)"),
        ({"order": "worst"}, "task_options.order: 'worst' is not allowed; choose best or input"),
        ({"width": 3}, "task_options: width not known to beam-search (known: beams, greedy, note, order, "
                       "temperature)"),
    ):
        with pytest.raises(TaskError) as error:
            task_class(TaskSettings(options=options))
        assert str(error.value) == message
    assert {flag: option.name for flag, option in task_shortcuts(task_class).items()} == {
        "--greedy": "greedy", "--order": "order"}


def test_a_task_that_declares_no_options_refuses_every_one(plugin_tasks):
    with pytest.raises(TaskError, match=r"^task_options: beams not known to no-options \(it takes no options\)$"):
        registry.get_task_class("no-options")(TaskSettings(options={"beams": 2}))


@pytest.mark.parametrize(("options", "problem"), [
    ((TaskOption("a", 1, "x", kind="int"), TaskOption("a", 2, "y", kind="int")), "option 'a' is declared 2 times"),
    ((TaskOption("a", True, "x", kind="flag", shortcut="--a"), TaskOption("b", True, "y", kind="flag", shortcut="--a")),
     "shortcut '--a' is declared 2 times"),
    ((TaskOption("a", True, "x", kind="flag", shortcut="-a"),), "option 'a': shortcut '-a' must start with '--'"),
    ((TaskOption("a", 0, "x", kind="int", minimum=1),),
     "option 'a': the default is refused (task_options.a: 0 is not allowed; give a whole number >= 1)"),
    ((TaskOption("a", None, "x", kind="choice", optional=True),),
     "option 'a': choices go with kind 'choice', and a choice needs them"),
    ((TaskOption("a", 1, "x", kind="integer"),), "option 'a': kind 'integer' is not one of flag, int, number, choice, "
                                                 "any"),
    ((TaskOption("a", 1, "two\nlines", kind="int"),), "option 'a': help must be one line"),
    ((TaskOption("a-b", 1, "x"),), "option 'a-b': the name must be a Python identifier (letters, digits, _)"),
    ((TaskOption("a", True, "x", kind="flag", minimum=0),), "option 'a': minimum and maximum go with kind 'int' or "
                                                            "'number'"),
])
def test_a_bad_declaration_is_named(options, problem):
    assert declaration_problems(options) == [problem]


def test_the_registry_refuses_a_task_that_declares_its_options_wrongly(plugin_tasks, monkeypatch):
    monkeypatch.setattr(BeamTask, "task_options", (TaskOption("beams", 0, "beams kept", kind="int", minimum=1),))
    with pytest.raises(TaskError, match=r"^task 'beam-search' \(tests.test_task_options:BeamTask\) declares its "
                                        r"task_options wrongly: option 'beams': the default is refused"):
        registry.get_task_class("beam-search")


# -- finetune-kit tasks NAME ----------------------------------------------------------------------

def rows_of(output: str, first_cell: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip("│┃ ").startswith(first_cell + " ")]


def test_tasks_name_lists_every_option_with_its_default_and_help():
    result = runner.invoke(app, ["tasks", "span-ner"])
    assert result.exit_code == 0, result.output
    for option in registry.get_task_class("span-ner").task_options:
        rows = rows_of(result.output, option.name)
        assert len(rows) == 1, (option.name, result.output)
        cells = [cell.strip() for cell in rows[0].strip("│").split("│")]
        assert cells == [option.name, value_text(option.default), option.allowed() + (" (or null)" if option.optional
                                                                                      else ""), "", option.help]


def test_tasks_name_gives_the_task_defaults():
    result = runner.invoke(app, ["tasks", "span-ner"])
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0].startswith("span-ner (provided by finetune-kit): Span-based NER")
    for fact in ("default metric best_f1 (higher is better)",
                 "default columns text_column=tokens, text_pair_column=text_pair, label_column=spans",
                 "default max_length 128", "default file format conll", "default head learning rate 0.001",
                 "pipeline tag token-classification"):
        assert fact in lines, result.output
    assert not any(line.startswith("evaluate before training") for line in lines)
    masked_lm = [" ".join(line.split()) for line in runner.invoke(app, ["tasks", "masked-lm"]).output.splitlines()]
    assert "default metric perplexity (lower is better)" in masked_lm
    assert any(line.startswith("evaluate before training yes") for line in masked_lm)
    assert any(line.startswith("default head learning rate set by the task at run time") for line in masked_lm)


def test_tasks_name_shows_a_shortcut():
    result = runner.invoke(app, ["tasks", "token-classification"])
    assert "--crf" in rows_of(result.output, "crf")[0]


def test_tasks_name_describes_a_plugin_task(plugin_tasks):
    result = runner.invoke(app, ["tasks", "beam-search"])
    assert result.exit_code == 0, result.output
    assert "--greedy" in rows_of(result.output, "greedy")[0]
    assert "a whole number in [1, 16]" in rows_of(result.output, "beams")[0]
    result = runner.invoke(app, ["tasks", "no-options"])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("It takes no options.")


def test_tasks_with_an_unknown_name_is_a_one_line_error():
    result = runner.invoke(app, ["tasks", "span-nerr"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown task 'span-nerr'. Did you mean 'span-ner'? Available tasks: masked-lm, ")
