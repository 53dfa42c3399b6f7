"""The Task contract: everything task-specific lives behind it; the loop knows nothing else.

A task plugin is a class registered under the ``finetune_kit.tasks`` entry-point group. The
training loop, the saver and the predictor only ever call the methods below, so a third-party
plugin has exactly the same powers as a built-in one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from datasets import Dataset, DatasetDict
from torch import nn


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the problem in one line."""


class TaskError(ValueError):
    """A task that cannot be set up with the settings given (wrong option, missing column...)."""


def checked_options(task_name: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A task's options: the defaults updated with those given; an unknown one is an error."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise TaskError(f"task_options: {', '.join(sorted(unknown))} not known to {task_name} "
                        f"(known: {', '.join(sorted(defaults))})")
    return {**defaults, **given}


def require_choice(options: dict[str, Any], key: str, allowed: tuple[Any, ...]) -> None:
    if options[key] not in allowed:
        raise TaskError(f"task_options.{key}: {options[key]!r} is not allowed; choose {' or '.join(map(str, allowed))}")


def require_flag(options: dict[str, Any], key: str) -> None:
    if not isinstance(options[key], bool):
        raise TaskError(f"task_options.{key}: {options[key]!r} is not allowed; give true or false")


def require_whole_number(options: dict[str, Any], key: str, minimum: int = 1, optional: bool = False) -> None:
    value = options[key]
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskError(f"task_options.{key}: {value!r} is not allowed; give a whole number >= {minimum}")


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


# One batch of model outputs for postprocessing: the indices of the features in the
# preprocessed dataset, and the model's non-loss outputs for them as numpy arrays.
OutputBatch = tuple[np.ndarray, dict[str, np.ndarray]]


@runtime_checkable
class Task(Protocol):
    """What a task plugin provides. See ``finetune_kit_tasks.text_classification`` for an example."""

    name: ClassVar[str]  # registry key, e.g. "text-classification"
    description: ClassVar[str]  # one line, shown by ``finetune-kit tasks``
    required_columns: ClassVar[tuple[str, ...]]  # TaskSettings fields naming needed columns
    head_modules: ClassVar[tuple[str, ...]]  # module names kept trainable and saved under LoRA
    default_metric: ClassVar[str]  # metric that picks the best checkpoint

    settings: TaskSettings
    # Optional attributes:
    # - ``lower_is_better``: the metrics (``compute_metrics`` keys, and the ``loss`` the loop adds)
    #   that are better lower, e.g. ``frozenset({"loss", "perplexity"})``; every other metric is
    #   better higher, whatever its name. It gives the direction of ``default_metric`` and of any
    #   ``metric_for_best``; the run's ``greater_is_better`` overrides it (default: {"loss"}).
    #   A task without it may set ``greater_is_better`` (the direction of ``default_metric``).
    # - ``uses_pooler``: True keeps the encoder's pooler layer (default: dropped).
    # - ``default_columns``: column settings left unset take these, e.g.
    #   ``{"text_column": "tokens", "label_column": "tags"}`` (default: text, text_pair, label).
    # - ``default_file_format``: how files whose extension says nothing are read, e.g. "conll".
    # - ``default_max_length``: max_length when the run does not set it (default 128).
    # - ``default_head_learning_rate``: the learning rate of ``head_modules`` when the run sets
    #   no ``head_learning_rate`` (default: the encoder's).
    # - ``calibrate(predictions, raw)``: after training, tune decision settings (a threshold) on
    #   the validation predictions of the best weights; ``state()`` then saves them.
    # - ``write_predictions(predictions, path)``: how ``finetune-kit predict`` writes its output
    #   (default: one JSON line per input); returns the paths written.
    # - ``report_sections(predictions, raw, metrics)``: the content of a split's evaluation report,
    #   a dict with ``headline`` ([(label, metric key)...]), ``bootstrap`` (``stats.Resampled``
    #   per-example statistics of headline metrics, for their confidence intervals),
    #   ``resampling_unit`` ("example", "sentence"...) and ``sections`` (``report.section`` of
    #   ``report`` blocks: tables, charts, marked examples). Default: a table of the metrics.
    # - ``label_counts(raw)``: the label distribution of a split, for the model card.
    # - ``set_epoch(epoch)``: called as each training epoch starts, for tasks whose ``collate``
    #   draws per-epoch randomness (masked-LM masks) and must draw it reproducibly.
    # - ``evaluate_before_training``: True scores validation and test with the starting model
    #   too; the figures go into the metrics (``before_training``) and the report.

    def __init__(self, settings: TaskSettings) -> None: ...

    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        """Build label maps from the training split and validate every split.

        ``sources`` maps a split name to the file (or hub name) it came from, for errors.
        """

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        """Check one split against the task (columns, known labels); raise ``DataError``."""

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (label maps...) saved with the model."""

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        """Restore what ``state`` returned, instead of ``setup``, when loading a saved model."""

    def build_model(self, encoder: nn.Module) -> nn.Module:
        """Wrap the encoder with the task head; ``forward(**batch)`` returns an output with
        ``.loss`` (when labels are in the batch) and the tensors ``postprocess`` reads."""

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """Batched ``datasets.map`` function from raw columns to features.

        Every feature carries ``example_index`` (its row in the raw split) and ``input_ids``;
        ``split`` is "train", "validation", "test" or "predict" (no labels needed there).
        """

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of features into a batch of tensors (dynamic padding)."""

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Turn Python-API inputs (strings, pairs, dicts) into raw rows with the task's columns."""

    def postprocess(
        self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]
    ) -> list[dict[str, Any]]:
        """Turn streamed model outputs into one prediction per raw example, in raw order."""

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        """Metrics of the predictions against the gold labels in ``raw``."""

    def write_report(self, metrics: dict[str, Any], title: str) -> str:
        """Markdown report of one split's metrics."""


# What a task that declares nothing has better lower: the loss the loop adds to the metrics.
LOWER_IS_BETTER = frozenset({"loss"})


def lower_is_better(task: Task) -> frozenset[str]:
    """The metrics of ``task`` that are better lower: its ``lower_is_better`` declaration; a task
    without one has the loss, and its ``default_metric`` as its ``greater_is_better`` says."""
    declared = getattr(task, "lower_is_better", None)
    if isinstance(declared, str):
        raise TaskError(f"{task.name}: lower_is_better is the string {declared!r}; declare a set of metric "
                        f"names, e.g. frozenset({{{declared!r}}})")
    if declared is not None:
        return frozenset(declared)
    default_direction = getattr(task, "greater_is_better", None)
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
