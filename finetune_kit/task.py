"""The Task contract: everything task-specific lives behind it; the loop knows nothing else.

A task plugin is a class deriving from ``TaskBase``, registered under the ``finetune_kit.tasks``
entry-point group. The training loop, the saver and the predictor only ever use its members, so
a third-party plugin has exactly the same powers as a built-in one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset, DatasetDict
from torch import nn

from .columns import column_values
from .files import atomic_write_text
from .report_content import ReportContent, metrics_content
from .task_options import TaskOption, unknown_options_error


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the problem in one line."""


class TaskError(ValueError):
    """A task that cannot be set up with the settings given (wrong option, missing column...)."""


def label_name(value: Any) -> str:
    """The canonical string form of a label read from CSV (text) or JSON (int, str, bool)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def sort_labels(names: Iterable[str]) -> list[str]:
    """A label set in its saved order: integers numerically, any other names alphabetically."""
    names = set(names)
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


# Kept for plugins written before ``TaskBase.task_options``; they word a refused value as the
# declarations do. A new task declares its options and calls ``TaskBase.read_options`` instead.
def checked_options(task_name: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A task's options: the defaults updated with those given; an unknown one is an error."""
    unknown = unknown_options_error(task_name, given, defaults)
    if unknown:
        raise TaskError(unknown)
    return {**defaults, **given}


def _require(option: TaskOption, value: Any) -> None:
    error = option.error(value)
    if error:
        raise TaskError(error)


def require_choice(options: dict[str, Any], key: str, allowed: tuple[Any, ...]) -> None:
    _require(TaskOption(key, None, "", kind="choice", choices=allowed), options[key])


def require_flag(options: dict[str, Any], key: str) -> None:
    _require(TaskOption(key, None, "", kind="flag"), options[key])


def require_whole_number(options: dict[str, Any], key: str, minimum: int = 1, optional: bool = False) -> None:
    _require(TaskOption(key, None, "", kind="int", minimum=minimum, optional=optional), options[key])


@dataclass(frozen=True)
class TaskSettings:
    """What a task is told about the run: column names, length limit and its own options."""

    # Column holding the (first) text.
    text_column: str = "text"
    # Column holding the second text of a pair (pair tasks only).
    text_pair_column: str = "text_pair"
    # Column holding the gold label (ignored when predicting).
    label_column: str = "label"
    # Longest tokenized input, in subword tokens, special tokens included.
    max_length: int = 128
    # Task-specific options (``task_options`` in the config, ``-o key=value`` on the CLI).
    options: dict[str, Any] = field(default_factory=dict)
    # The run's seed, for tasks that draw their own randomness (masked-LM masks).
    seed: int = 42


def text_examples(task_name: str, inputs: Iterable[Any], settings: TaskSettings, pairs: bool = False
                  ) -> list[dict[str, Any]]:
    """Raw rows from the inputs of ``Predictor.predict`` for a text task: a dict is a row as it
    is; a string is the text of a single-text task, a (text, text_pair) pair the two texts of a
    pair task (``pairs``), each in the run's columns."""
    rows = []
    for item in inputs:
        if isinstance(item, dict):
            rows.append(dict(item))
        elif pairs and isinstance(item, (tuple, list)) and len(item) == 2:
            rows.append({settings.text_column: item[0], settings.text_pair_column: item[1]})
        elif not pairs and isinstance(item, str):
            rows.append({settings.text_column: item})
        elif pairs:
            raise TaskError(f"{task_name} predicts from (text, text_pair) pairs or dicts, not {item!r:.60}")
        else:
            raise TaskError(f"{task_name} predicts from strings or dicts, not {type(item).__name__}")
    return rows


# The key that holds, in each batch ``preprocess`` gets, the index of every raw row in its split;
# a task copies it into the ``example_index`` of each feature it makes from that row.
ROW_INDEX = "_index"

# One batch of model outputs for postprocessing: the indices of the features in the
# preprocessed dataset, and the model's non-loss outputs for them as numpy arrays.
OutputBatch = tuple[np.ndarray, dict[str, np.ndarray]]


class TaskBase(ABC):
    """What a task plugin provides; derive from it. See ``finetune_kit_tasks.text_classification``.

    The abstract methods are required; every other member has the default the core assumes, so
    the core reads each one directly and a task overrides only what it needs.
    """

    name: ClassVar[str]  # registry key, e.g. "text-classification" (required)
    default_metric: ClassVar[str]  # metric that picks the best checkpoint (required)
    description: ClassVar[str] = ""  # one line, shown by ``finetune-kit tasks``
    # The Hugging Face pipeline the task corresponds to, for the model card (None: none).
    pipeline_tag: ClassVar[str | None] = None
    # Module names kept trainable and saved under LoRA (and trained at ``head_learning_rate``).
    head_modules: ClassVar[tuple[str, ...]] = ()
    # The metrics (``compute_metrics`` keys, and the ``loss`` the loop adds) that are better lower,
    # e.g. ``frozenset({"loss", "perplexity"})``; every other metric is better higher, whatever
    # its name. It gives the direction of ``default_metric`` and of any ``metric_for_best``; the
    # run's ``greater_is_better`` overrides it. None: {"loss"}, and ``greater_is_better`` below.
    lower_is_better: ClassVar[frozenset[str] | None] = None
    # Only read when ``lower_is_better`` is None: the direction of ``default_metric``
    # (None: better higher).
    greater_is_better: ClassVar[bool | None] = None
    # True keeps the encoder's pooler layer (by default it is dropped); a property where an
    # option decides it.
    uses_pooler: bool = False
    # True when the head reads the encoder's last layer at the first position only ([CLS]): the
    # last layer then computes past its attention for that position alone (``first_token``).
    # A property where an option decides it.
    reads_first_token_only: bool = False
    # Column settings left unset take these, e.g. ``{"text_column": "tokens", "label_column": "tags"}``.
    default_columns: ClassVar[dict[str, str]] = {}
    # How files whose extension says nothing are read, e.g. "conll" (None: refused).
    default_file_format: ClassVar[str | None] = None
    # max_length when the run does not set it.
    default_max_length: ClassVar[int] = TaskSettings.max_length
    # The learning rate of ``head_modules`` when the run sets no ``head_learning_rate``
    # (None: the encoder's).
    default_head_learning_rate: ClassVar[float | None] = None
    # True scores validation and test with the starting model too; the figures go into the
    # metrics (``before_training``) and the report.
    evaluate_before_training: ClassVar[bool] = False
    # The options the task takes (``-o name=value``), read by ``read_options``, listed by
    # ``finetune-kit tasks NAME``; a declared ``shortcut`` is a flag of ``finetune-kit train``.
    task_options: ClassVar[tuple[TaskOption, ...]] = ()
    # The label names of a trained classifier (None: a task without a label set).
    labels: list[str] | None = None

    settings: TaskSettings

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings

    def read_options(self) -> dict[str, Any]:
        """The run's options: each declared option's default, updated with the values the run
        gives. An undeclared name or a value its declaration refuses is a one-line ``TaskError``."""
        given = self.settings.options
        unknown = unknown_options_error(self.name, given, (option.name for option in self.task_options))
        if unknown:
            raise TaskError(unknown)
        options = {option.name: option.default for option in self.task_options} | given
        for option in self.task_options:
            error = option.error(options[option.name])
            if error:
                raise TaskError(error)
        return options

    @abstractmethod
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        """Build label maps from the training split and validate every split.

        ``sources`` maps a split name to the file (or hub name) it came from, for errors.
        """

    @abstractmethod
    def validate(self, raw: Dataset, split: str, source: str) -> None:
        """Check one split against the task (columns, known labels); raise ``DataError``."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (label maps...) saved with the model."""

    @abstractmethod
    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        """Restore what ``state`` returned, instead of ``setup``, when loading a saved model."""

    @abstractmethod
    def build_model(self, encoder: nn.Module) -> nn.Module:
        """Wrap the encoder with the task head; ``forward(**batch)`` returns an output with
        ``.loss`` (when labels are in the batch) and the tensors ``postprocess`` reads."""

    @abstractmethod
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """Batched ``datasets.map`` function from raw columns to features.

        Every feature carries ``example_index`` (its row in the raw split, from
        ``batch[ROW_INDEX]``) and ``input_ids``; ``split`` is "train", "validation", "test" or "predict" (no labels needed there).
        """

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of features into a batch of tensors (dynamic padding)."""

    @abstractmethod
    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Turn Python-API inputs (strings, pairs, dicts) into raw rows with the task's columns."""

    @abstractmethod
    def postprocess(
        self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]
    ) -> list[dict[str, Any]]:
        """Turn streamed model outputs into one prediction per raw example, in raw order."""

    @abstractmethod
    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        """Metrics of the predictions against the gold labels in ``raw``."""

    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> bool:
        """After training, tune decision settings (a threshold) on the validation predictions of
        the best weights, for ``state()`` to save; returns whether it tuned anything."""
        return False

    def feature_lengths(self, features: Dataset) -> list[int]:
        """The length of every feature, for batching features of like length together: their
        ``input_ids`` lengths. Column-wise, as it runs over a whole split."""
        return [len(ids) for ids in column_values(features, "input_ids")]

    def set_epoch(self, epoch: int) -> None:
        """Called as each training epoch starts, for tasks whose ``collate`` draws per-epoch
        randomness (masked-LM masks) and must draw it reproducibly."""

    def label_counts(self, raw: Dataset) -> dict[str, int] | None:
        """The label distribution of a split, for the model card (None: not shown)."""
        return None

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The evaluation report of a split, from its predictions, its raw rows and its metrics:
        summary blocks (also printed after training), headline metrics with the per-example
        statistics for their intervals, and sections (see ``report_content``). By default a
        table of every scalar metric."""
        return metrics_content(metrics)

    def write_predictions(self, predictions: list[dict[str, Any]], path: Path) -> list[Path]:
        """How ``finetune-kit predict`` writes its output: one JSON line per input, written
        atomically; returns the paths written."""
        atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
        return [path]


# The contract's name in type hints; a class that does not derive from TaskBase is adapted by
# ``registry.get_task_class``.
Task = TaskBase


def task_shortcuts(task_class: type[TaskBase]) -> dict[str, TaskOption]:
    """The ``finetune-kit train`` flags that the task's options declare as their ``shortcut``,
    each with its option."""
    return {option.shortcut: option for option in task_class.task_options if option.shortcut}


# What a task that declares nothing has better lower: the loss the loop adds to the metrics.
LOWER_IS_BETTER = frozenset({"loss"})


def lower_is_better(task: Task) -> frozenset[str]:
    """The metrics of ``task`` that are better lower: its ``lower_is_better`` declaration; a task
    without one has the loss, and its ``default_metric`` as its ``greater_is_better`` says."""
    declared = task.lower_is_better
    if isinstance(declared, str):
        raise TaskError(f"{task.name}: lower_is_better is the string {declared!r}; declare a set of metric "
                        f"names, e.g. frozenset({{{declared!r}}})")
    if declared is not None:
        return frozenset(declared)
    default_direction = task.greater_is_better
    if default_direction is None:
        return LOWER_IS_BETTER
    if default_direction:
        return LOWER_IS_BETTER - {task.default_metric}
    return LOWER_IS_BETTER | {task.default_metric}


def greater_is_better(task: Task, metric: str, setting: bool | None = None) -> bool:
    """Whether a higher ``metric`` is a better model: ``setting`` (the run's ``greater_is_better``)
    when given, else the task's declaration: lower for its ``lower_is_better`` metrics, higher for
    any other. The name of a metric says nothing (an undeclared "hinge_loss" is better higher)."""
    if setting is not None:
        return setting
    return metric not in lower_is_better(task)
