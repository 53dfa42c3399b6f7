"""``regression``: one or several numbers per text, or per pair of texts (e.g. STS-B similarity).

Inputs. A single text (``text_column``), or a pair encoded as one sequence, ``first [SEP] second``,
when the training data has the ``text_pair`` column or the run names a pair column, which must then
be there (STS-B: ``--text-column sentence1 --text-pair-column sentence2 --label-column score``). The mode is saved with the model; the Python
API then takes strings, or (text, text_pair) tuples, or dicts of columns.

Targets. By default one number per example in the label column (``label``): ``"3.8"`` in CSV/TSV
(parsed), ``3.8`` in JSON Lines, or a JSON list of numbers for several targets (named ``label_0``,
``label_1``...). ``-o target_columns=a,b`` reads one number from each of the named columns
instead. A cell that is no finite number is an error naming its file and line.

Model. The encoder's architecture with its own transformers sequence-classification head
(``AutoModelForSequenceClassification``, ``problem_type="regression"``, one output per target,
``id2label`` naming the targets), trained with transformers' own loss, the mean squared error, on
the targets as they are. It is saved as that class saves itself: ``from_pretrained`` loads the
directory and its ``logits`` are the predictions.

``-o sigmoid=true`` squashes the outputs into a range instead: each target is scaled to [0, 1]
from ``-o target_range=LOW,HIGH`` (default: its minimum and maximum in the training split; the
range is saved with the model), the loss is the mean squared error between the sigmoid of the
outputs and the scaled targets, and predictions are mapped back, so they never leave the range.
Gold values of the other splits may lie outside the range (a given range must hold the training
targets). The saved model is still the plain transformers class (only the instance's ``forward``
is replaced, at build and at load time): a transformers user who loads it gets the raw logits and
must compute ``LOW + sigmoid(logits) * (HIGH - LOW)`` with the range in ``finetune_kit.json``
(``task_state.target_range``). Without ``sigmoid`` the logits are the values, and
``pipeline("text-classification")`` gives them as its scores (no function is applied to a
``problem_type="regression"`` model's outputs).

Predictions: ``{"value": x}`` with one target, ``{"values": {target: x, ...}}`` with several.

Metrics: ``pearson``, ``spearman`` (picks the best checkpoint), ``mse``, ``rmse``, ``mae`` and
``num_examples``; with several targets the same per target under ``per_target`` and, at the top,
their means over the targets. ``loss``, ``mse``, ``rmse`` and ``mae`` are better lower. A
correlation with a constant side is undefined and reported as 0.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune_kit.batching import MODEL_INPUTS, InputPadder
from finetune_kit.columns import column_values
from finetune_kit.data import iter_rows, require_columns, require_text, row_places, where
from finetune_kit.heads import (
    has_transformers_head,
    head_module_names,
    transformers_model,
)
from finetune_kit.report_content import (
    MAX_EXAMPLES,
    Block,
    ReportContent,
    Section,
    scatter,
    table,
)
from finetune_kit.stats import Resampled, mean_of
from finetune_kit.task import (
    ROW_INDEX,
    DataError,
    OutputBatch,
    TaskBase,
    TaskError,
    TaskOption,
    TaskSettings,
    text_examples,
)

# Targets spanning at most this many whole numbers are binned by whole number, others in equal bins.
MAX_WHOLE_BINS = 20
EQUAL_BINS = 10

METRIC_NAMES = ("pearson", "spearman", "mse", "rmse", "mae")


# -- numbers -------------------------------------------------------------------------------------

def as_float(value: Any) -> float | None:
    """The float a cell spells ("3.8" in CSV, 3.8 in JSON, "inf"); None for anything else
    (text, a boolean, an empty cell)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None


def parse_number(value: Any) -> float | None:
    """The finite number a cell holds; None when it holds none (NaN and infinities included)."""
    number = as_float(value)
    return number if number is not None and math.isfinite(number) else None


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of the ranks they span (as Spearman needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts_group)
    last = np.r_[first[1:], len(values)] - 1
    ranks = np.empty(len(values))
    ranks[order] = ((first + last) / 2 + 1)[np.cumsum(starts_group) - 1]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; 0 when either side is constant (where it is undefined)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    spread = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / spread if spread > 0 else 0.0


def target_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The metrics of one target; Spearman is the Pearson correlation of the average ranks."""
    errors = np.asarray(predicted, dtype=np.float64) - np.asarray(gold, dtype=np.float64)
    mse = float(np.mean(errors**2))
    return {"pearson": pearson(gold, predicted), "spearman": pearson(average_ranks(gold), average_ranks(predicted)),
            "mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(errors)))}


def regression_metrics(gold: np.ndarray, predicted: np.ndarray, targets: list[str]) -> dict[str, Any]:
    """Metrics of (examples, targets) arrays: those of the one target, or with several the means
    over the targets at the top and each target's under ``per_target``."""
    per_target = {name: target_metrics(gold[:, k], predicted[:, k]) for k, name in enumerate(targets)}
    out: dict[str, Any] = {m: float(np.mean([per_target[t][m] for t in targets])) for m in METRIC_NAMES}
    out["num_examples"] = len(gold)
    if len(targets) > 1:
        out["per_target"] = per_target
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is not positive."""
    numerator, denominator = np.broadcast_arrays(numerator, denominator)
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)


def pearson_from_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson's r from the sums of (x, y, x², y², xy, 1) over the last axis (0 where undefined)."""
    sx, sy, sxx, syy, sxy, n = np.moveaxis(sums, -1, 0)
    n_safe = np.where(n > 0, n, 1)
    covariance = sxy - sx * sy / n_safe
    spread = np.sqrt(np.clip(sxx - sx**2 / n_safe, 0, None) * np.clip(syy - sy**2 / n_safe, 0, None))
    return _divide(covariance, spread)


def resampled_mean_pearson(name: str, gold: np.ndarray, predicted: np.ndarray) -> Resampled:
    """The mean over targets of Pearson's r, resampled exactly from per-example (x, y, x², y², xy, 1)
    of each target. The values are centred on their full-sample means first (r does not change
    with a shift), which keeps the sums free of cancellation."""
    x = gold - gold.mean(axis=0)
    y = predicted - predicted.mean(axis=0)
    columns = np.stack([x, y, x * x, y * y, x * y, np.ones_like(x)], axis=-1)  # (examples, targets, 6)
    count = gold.shape[1]

    def formula(sums: np.ndarray) -> np.ndarray:
        return pearson_from_sums(sums.reshape(*sums.shape[:-1], count, 6)).mean(axis=-1)

    return Resampled(name, columns.reshape(len(gold), -1), formula)


def resampled_mean_rmse(gold: np.ndarray, predicted: np.ndarray) -> Resampled:
    """The mean over targets of each target's root mean squared error."""
    squared = (predicted - gold) ** 2
    columns = np.concatenate([squared, np.ones((len(gold), 1))], axis=1)
    return Resampled("rmse", columns, lambda s: np.sqrt(_divide(s[..., :-1], s[..., -1:])).mean(axis=-1))


def bootstrap_statistics(gold: np.ndarray, predicted: np.ndarray) -> list[Resampled]:
    """Per-example statistics of every headline metric (means over targets), for its interval.

    Pearson is resampled exactly. Spearman is approximated: each resample takes the Pearson
    correlation of the ranks in the *full* sample rather than ranking its own draw again (which
    no column sums can give); its estimate on the full sample is exact. MSE and MAE are means of
    per-example errors (averaged over the targets), RMSE the mean of the targets' roots."""
    gold_ranks = np.column_stack([average_ranks(gold[:, k]) for k in range(gold.shape[1])])
    predicted_ranks = np.column_stack([average_ranks(predicted[:, k]) for k in range(gold.shape[1])])
    errors = predicted - gold
    return [resampled_mean_pearson("pearson", gold, predicted),
            resampled_mean_pearson("spearman", gold_ranks, predicted_ranks),
            mean_of("mse", (errors**2).mean(axis=1)), resampled_mean_rmse(gold, predicted),
            mean_of("mae", np.abs(errors).mean(axis=1))]


def bin_edges(values: np.ndarray) -> np.ndarray:
    """Edges that bin ``values``: one bin per whole number when they span few (STS-B's 0-5 gives
    [0, 1) ... [5, 6]), else ``EQUAL_BINS`` bins of equal width."""
    low, high = float(np.min(values)), float(np.max(values))
    if math.floor(high) - math.floor(low) < MAX_WHOLE_BINS:
        return np.arange(math.floor(low), math.floor(high) + 2, dtype=np.float64)
    return np.linspace(low, high, EQUAL_BINS + 1)


def bin_names(edges: np.ndarray) -> list[str]:
    """'[a, b)' per bin, the last one closed as numpy's histograms count it: '[a, b]'."""
    last = len(edges) - 2
    return [f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == last else ')'}" for i in range(len(edges) - 1)]


# -- the sigmoid option's forward ------------------------------------------------------------------

def sigmoid_mse_forward(self: nn.Module, labels: torch.Tensor | None = None,
                        **inputs: torch.Tensor) -> SequenceClassifierOutput:
    """The forward of a transformers sequence-classification model under ``sigmoid=true``: the
    class's own forward for the logits, and as the loss the mean squared error between their
    sigmoid and the targets scaled to [0, 1]. The logits are returned raw, as the class gives them."""
    logits = type(self).forward(self, **inputs).logits
    loss = None
    if labels is not None:
        loss = nn.functional.mse_loss(torch.sigmoid(logits.float()), labels.float().reshape(logits.shape))
    return SequenceClassifierOutput(loss=loss, logits=logits)


def sigmoid_outputs(model: nn.Module) -> nn.Module:
    """Give this instance of a transformers model ``sigmoid_mse_forward``; it stays an instance of
    its class, which is what ``save_pretrained`` saves and ``from_pretrained`` loads."""
    model.forward = types.MethodType(sigmoid_mse_forward, model)
    return model


# -- the task --------------------------------------------------------------------------------------

class RegressionTask(TaskBase):
    name: ClassVar[str] = "regression"
    description: ClassVar[str] = ("Regression of one or several numbers from a text or a text pair "
                                  "(the encoder's transformers head), e.g. STS-B similarity, ratings")
    pipeline_tag: ClassVar[str | None] = "text-classification"  # what the Hub files STS-B cross-encoders under
    head_modules: ClassVar[tuple[str, ...]] = ("classifier",)
    default_metric: ClassVar[str] = "spearman"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "mse", "rmse", "mae"})
    # BERT's transformers head reads the pooler; ``transformers_model`` drops it where a head does not.
    uses_pooler: bool = True
    reads_first_token_only: bool = True
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("target_columns", None, "columns holding one number each, comma-separated, e.g. a,b "
                   "(default: the label column, a number or a JSON list of numbers)", optional=True),
        TaskOption("sigmoid", False, "squash the outputs into target_range with a sigmoid (the loss on the "
                   "targets scaled to [0, 1])", kind="flag"),
        TaskOption("target_range", None, "LOW,HIGH of the targets for sigmoid=true (default: the training "
                   "targets' minimum and maximum)", optional=True),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = self.read_options()  # a bad option fails now, before any data is read
        self.target_columns = self._read_target_columns(self.options["target_columns"])
        self.given_range = self._read_target_range(self.options["target_range"])
        if self.given_range is not None and not self.options["sigmoid"]:
            raise TaskError("task_options.target_range: only used with sigmoid=true")
        self.targets: list[str] = list(self.target_columns or [])
        self.pairs = False
        self.sigmoid = bool(self.options["sigmoid"])
        self.ranges: list[tuple[float, float]] = []  # per target, under sigmoid=true
        self.tokenizer: Any = None
        self._collator: InputPadder | None = None

    # -- options -------------------------------------------------------------------------------
    @staticmethod
    def _read_target_columns(value: Any) -> list[str] | None:
        if value is None:
            return None
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            names = [n.strip() for n in names]
            if names and all(names) and len(set(names)) == len(names):
                return names
        raise TaskError(f"task_options.target_columns: {value!r} is not allowed; give distinct column names "
                        f"separated by commas, e.g. a,b")

    @staticmethod
    def _read_target_range(value: Any) -> tuple[float, float] | None:
        if value is None:
            return None
        parts = value.split(",") if isinstance(value, str) else value
        if isinstance(parts, (list, tuple)) and len(parts) == 2:
            low, high = (parse_number(p) for p in parts)
            if low is not None and high is not None and low < high:
                return low, high
        raise TaskError(f"task_options.target_range: {value!r} is not allowed; give LOW,HIGH, two numbers with "
                        f"LOW < HIGH, e.g. 0,5")

    # -- columns -------------------------------------------------------------------------------
    def text_columns(self) -> list[str]:
        pair = [self.settings.text_pair_column] if self.pairs else []
        return [self.settings.text_column, *pair]

    def gold_columns(self) -> list[str]:
        return list(self.target_columns or [self.settings.label_column])

    def _column_hints(self) -> dict[str, str]:
        return {self.settings.text_column: "--text-column", self.settings.text_pair_column: "--text-pair-column",
                self.settings.label_column: "--label-column",
                **{c: "-o target_columns" for c in self.target_columns or []}}

    # -- setup and validation --------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        train, source = raw["train"], sources["train"]
        # pairs when the data has the pair column, or the run names one (a misspelt name is then an
        # error, not a silent single-text run)
        self.pairs = (self.settings.text_pair_column in train.column_names
                      or self.settings.text_pair_column != TaskSettings.text_pair_column)
        require_columns(train, self.text_columns() + self.gold_columns(), source, self._column_hints())
        if self.target_columns is None:
            self.targets = self._label_targets(train, source)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])
        if self.sigmoid:
            self.ranges = self._training_ranges(self.gold(train, source), train, source)
        self._set_tokenizer(tokenizer)

    def _label_targets(self, train: Dataset, source: str) -> list[str]:
        """The targets of the label column: itself for numbers; ``label_0``, ``label_1``... for
        lists of numbers, as many as the first training row holds."""
        label = self.settings.label_column
        first = train[0][label]
        if not isinstance(first, list):
            return [label]
        if not first:
            raise DataError(f"{where(source, train[0])}: {label} is an empty list; give one number per target")
        return [label] if len(first) == 1 else [f"{label}_{k}" for k in range(len(first))]

    def _training_ranges(self, gold: np.ndarray, train: Dataset, source: str) -> list[tuple[float, float]]:
        """The range of each target the sigmoid maps to: the one given, which must hold every
        training target, or the training targets' own minimum and maximum."""
        if self.given_range is not None:
            low, high = self.given_range
            outside = np.flatnonzero(((gold < low) | (gold > high)).any(axis=1))
            if len(outside):
                row = int(outside[0])
                values = ", ".join(f"{v:g}" for v in gold[row])
                raise DataError(f"{where(source, train[row])}: {'/'.join(self.targets)} {values} outside "
                                f"task_options.target_range [{low:g}, {high:g}]")
            return [self.given_range] * len(self.targets)
        ranges = []
        for k, name in enumerate(self.targets):
            low, high = float(gold[:, k].min()), float(gold[:, k].max())
            if low == high:
                raise TaskError(f"every training target '{name}' is {low:g}, so sigmoid=true has no range to "
                                f"scale to; give -o target_range=LOW,HIGH")
            ranges.append((low, high))
        return ranges

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        gold_columns = [] if split == "predict" else self.gold_columns()
        require_columns(raw, self.text_columns() + gold_columns, source, self._column_hints())
        require_text(raw, self.text_columns(), source)
        if split != "predict":
            self.gold(raw, source)

    def gold(self, raw: Dataset, source: str = "") -> np.ndarray:
        """The targets of a split as an (examples, targets) array; a cell that holds no number,
        or a list of the wrong length, is an error naming its file and line."""
        return self._gold_of_rows(iter_rows(raw, self.gold_columns()), source)

    def _gold_of_rows(self, rows: Iterable[dict[str, Any]], source: str) -> np.ndarray:
        values = []
        for row in rows:
            if self.target_columns is not None:
                values.append([self._number(row, c, row[c], source) for c in self.target_columns])
            else:
                values.append(self._label_numbers(row, source))
        return np.asarray(values, dtype=np.float64).reshape(len(values), len(self.targets))

    def _label_numbers(self, row: dict[str, Any], source: str) -> list[float]:
        label, value = self.settings.label_column, row[self.settings.label_column]
        if not isinstance(value, list):
            if len(self.targets) > 1:
                raise DataError(f"{where(source, row)}: {label} {value!r} is one number; the targets are "
                                f"{', '.join(self.targets)}")
            return [self._number(row, label, value, source)]
        if len(value) != len(self.targets):
            raise DataError(f"{where(source, row)}: {label} is a list of {len(value)}; the targets are "
                            f"{', '.join(self.targets)}")
        return [self._number(row, f"{label}[{k}]", v, source) for k, v in enumerate(value)]

    @staticmethod
    def _number(row: dict[str, Any], name: str, value: Any, source: str) -> float:
        number = parse_number(value)
        if number is not None:
            return number
        place = where(source, row)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{place}: {name} is empty")
        infinite = as_float(value) is not None and math.isinf(as_float(value))
        raise DataError(f"{place}: {name} {value!r} is not a {'finite ' if infinite else ''}number")

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer)

    def state(self) -> dict[str, Any]:
        return {"targets": self.targets, "target_columns": self.target_columns, "pairs": self.pairs,
                "sigmoid": self.sigmoid, "target_range": [list(r) for r in self.ranges] if self.sigmoid else None}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.targets = list(state["targets"])
        self.target_columns = state.get("target_columns")
        self.pairs = bool(state["pairs"])
        self.sigmoid = bool(state["sigmoid"])
        self.ranges = [(float(low), float(high)) for low, high in state.get("target_range") or []]
        self._set_tokenizer(tokenizer)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        """``AutoModelForSequenceClassification`` of the encoder's architecture, one regression
        output per target (named in its ``id2label``); with ``sigmoid`` its forward replaced."""
        if not has_transformers_head(AutoModelForSequenceClassification, encoder.config):
            raise TaskError(f"regression needs the architecture's transformers sequence-classification head; "
                            f"transformers has none for {type(encoder.config).__name__}")
        model = transformers_model(
            AutoModelForSequenceClassification, encoder, num_labels=len(self.targets),
            id2label=dict(enumerate(self.targets)), label2id={t: k for k, t in enumerate(self.targets)},
            problem_type="regression",
        )
        self.head_modules = head_module_names(model)
        return sigmoid_outputs(model) if self.sigmoid else model

    # -- features ------------------------------------------------------------------------------
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        texts = [batch[c] for c in self.text_columns()]
        encoded = self.tokenizer(*texts, truncation="longest_first" if self.pairs else True,
                                 max_length=self.settings.max_length)
        out = {k: encoded[k] for k in MODEL_INPUTS if k in encoded}
        out["example_index"] = batch[ROW_INDEX]
        if split != "predict":
            columns = self.gold_columns()
            gold = self._gold_of_rows((dict(zip(columns, v)) for v in zip(*(batch[c] for c in columns))), split)
            if self.sigmoid:
                low, high = self._range_arrays()
                gold = (gold - low) / (high - low)
            out["labels"] = gold[:, 0].tolist() if len(self.targets) == 1 else gold.tolist()
        return out

    def _range_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ranges = np.asarray(self.ranges, dtype=np.float64)
        return ranges[:, 0], ranges[:, 1]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._collator is not None, "setup() or load_state() first"
        return self._collator(features)

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return text_examples(self.name, inputs, self.settings, pairs=self.pairs)

    # -- outputs -------------------------------------------------------------------------------
    def predicted_values(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> np.ndarray:
        """The (examples, targets) predictions on the targets' own scale."""
        example_of = np.asarray(column_values(features, "example_index"))
        values = np.zeros((len(raw), len(self.targets)), dtype=np.float64)
        for indices, arrays in outputs:
            values[example_of[indices]] = arrays["logits"].reshape(len(indices), -1)
        if self.sigmoid:
            low, high = self._range_arrays()
            values = low + (high - low) * 0.5 * (1 + np.tanh(values / 2))  # the sigmoid, without overflow
        return values

    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        values = self.predicted_values(raw, features, outputs)
        if len(self.targets) == 1:
            return [{"value": float(v)} for v in values[:, 0]]
        return [{"values": dict(zip(self.targets, map(float, row)))} for row in values]

    def prediction_array(self, predictions: list[dict[str, Any]]) -> np.ndarray:
        if len(self.targets) == 1:
            return np.array([[p["value"]] for p in predictions], dtype=np.float64).reshape(-1, 1)
        return np.array([[p["values"][t] for t in self.targets] for p in predictions], dtype=np.float64)

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        return regression_metrics(self.gold(raw), self.prediction_array(predictions), self.targets)

    # -- report --------------------------------------------------------------------------------
    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The metrics (and per target) as tables; the headline metrics with bootstrap intervals;
        gold against predicted per target, as a scatter of the examples and as binned counts; the
        examples with the largest errors."""
        gold, predicted = self.gold(raw), self.prediction_array(predictions)
        main = [[k, metrics[k]] for k in (*METRIC_NAMES, "loss", "num_examples") if k in metrics]
        summary: list[Block] = [table("Metrics" + (" (means over the targets)" if len(self.targets) > 1 else ""),
                                      ["metric", "value"], main)]
        if "per_target" in metrics:
            summary.append(table("Per target", ["target", *METRIC_NAMES],
                                 [[t, *[m[k] for k in METRIC_NAMES]] for t, m in metrics["per_target"].items()]))
        return ReportContent(
            summary=summary,
            headline=[("Pearson", "pearson"), ("Spearman", "spearman"), ("MSE", "mse"), ("RMSE", "rmse"),
                      ("MAE", "mae")],
            bootstrap=bootstrap_statistics(gold, predicted),
            sections=[self._gold_against_predicted(gold, predicted), self._largest_errors(raw, gold, predicted)],
        )

    def _gold_against_predicted(self, gold: np.ndarray, predicted: np.ndarray) -> Section:
        blocks: list[Block] = [scatter(f"Gold against predicted: {name}", "gold", "predicted", gold[:, k],
                                       predicted[:, k], diagonal=True) for k, name in enumerate(self.targets)]
        return Section("Gold against predicted", blocks,
                       note="One point per example; the dashed diagonal is a perfect prediction.")

    def _largest_errors(self, raw: Dataset, gold: np.ndarray, predicted: np.ndarray) -> Section:
        errors = np.abs(predicted - gold).mean(axis=1)
        worst = np.argsort(-errors, kind="stable")[:MAX_EXAMPLES]
        place, places = row_places(raw)
        columns = self.text_columns()
        worst_rows = raw.select(worst.tolist())
        texts = {c: column_values(worst_rows, c) for c in columns}
        several = len(self.targets) > 1
        value_columns = ([f"{kind} {t}" for t in self.targets for kind in ("gold", "predicted")] if several
                         else ["gold", "predicted"])
        rows = []
        for position, i in enumerate(worst):
            values = [v for k in range(len(self.targets)) for v in (float(gold[i, k]), float(predicted[i, k]))]
            rows.append([places[i], *[texts[c][position] for c in columns], *values,
                         float(errors[i])])
        error_name = "mean |error|" if several else "|error|"
        return Section("Largest errors", [
            table("Largest errors", [place, *columns, *value_columns, error_name], rows)],
            note=f"The {len(rows)} of {len(gold)} examples whose predictions are furthest from the gold values.")

    def label_counts(self, raw: Dataset) -> dict[str, int] | None:
        """The targets' distribution for the model card: examples per bin (per whole number for
        targets such as STS-B's 0-5, else ten equal bins), each target's bins named after it when
        there are several. None for a split that does not hold valid targets."""
        try:
            gold = self.gold(raw)
        except (KeyError, ValueError):  # no targets, or not numbers: nothing to count
            return None
        counts: dict[str, int] = {}
        for k, name in enumerate(self.targets):
            edges = bin_edges(gold[:, k])
            histogram, _ = np.histogram(gold[:, k], bins=edges)
            prefix = f"{name} " if len(self.targets) > 1 else ""
            counts.update({prefix + bin_name: int(c) for bin_name, c in zip(bin_names(edges), histogram)})
        return counts
