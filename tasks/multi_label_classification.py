"""``multi-label-classification``: one text, or a pair of texts, and any number of labels out of a
fixed set: none, one or several (emotions, topics, toxicity types...).

The model is the encoder's architecture with its own transformers sequence-classification head
(``AutoModelForSequenceClassification`` with ``problem_type="multi_label_classification"``): one
logit per label, each trained with binary cross-entropy, so the directory loads in transformers
with its labels. A label is predicted when its sigmoid probability reaches a decision threshold.
That threshold is tuned after training on the validation predictions of the best weights (one
for all labels, for the best macro F1, or one per label, for that label's F1) and saved with the
model; ``threshold`` fixes it instead. Pairs (``first [SEP] second``) are read when the training
data has the ``text_pair`` column, or the run names a pair column (which must then be there).

The gold labels of an example come in one of three layouts:

- a list in the label column (``"labels": ["joy", "anger"]`` in JSON Lines, or integers);
- text in the label column split on ``label_separator`` (GoEmotions' ``4,27``); without a
  separator, text is one label;
- one 0/1 column per label (``label_columns``), named after its label.

``label_names`` (a file with one name per line, or a comma list) fixes the label set and its
order; integer labels are then ids into it (a name's id is its line, counting from 0). Without
it the label set is every label of the training data (integers sorted numerically, text
alphabetically). An example may have no labels at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForSequenceClassification

from finetune_kit.batching import MODEL_INPUTS, InputPadder
from finetune_kit.columns import column_values
from finetune_kit.data import iter_rows, require_columns, require_text, row_places, where
from finetune_kit.heads import has_transformers_head, head_module_names, transformers_model
from finetune_kit.report_content import (
    MAX_EXAMPLES,
    ReportContent,
    Section,
    curve,
    per_label_chart,
    per_label_table,
    table,
)
from finetune_kit.stats import Resampled, mean_of, micro_prf
from finetune_kit.task import (
    ROW_INDEX,
    DataError,
    OutputBatch,
    TaskBase,
    TaskError,
    TaskOption,
    TaskSettings,
    label_name,
    sort_labels,
    text_examples,
)

# The thresholds tuning tries: 0.05, 0.06, ..., 0.95.
THRESHOLD_GRID = np.round(np.arange(5, 96) / 100, 2)
DEFAULT_THRESHOLD = 0.5
# A label's share in the prior bias is kept within [PRIOR_CLIP, 1 - PRIOR_CLIP]: a label never (or
# always) seen in training gets a large, finite log-odds.
PRIOR_CLIP = 1e-3
INTEGER = re.compile(r"-?\d+")
# 0/1 cells of a label column, as CSV (text) or JSON (numbers, booleans) gives them.
FLAG_VALUES = {"1": True, "0": False, "true": True, "false": False, "1.0": True, "0.0": False}


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator != 0)


def label_f1(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each label's F1, from (examples, labels) boolean matrices."""
    true_positives = (gold & predicted).sum(axis=0)
    return ratio(2 * true_positives, gold.sum(axis=0) + predicted.sum(axis=0))


def multi_label_metrics(gold: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Set metrics of (examples, labels) boolean matrices: micro and macro precision, recall and
    F1 (macro: the mean of the per-label figures; a label neither given nor predicted scores 0),
    per-label figures with their gold support, subset accuracy (the exact set predicted), Hamming
    loss (the share of wrong example-label decisions) and the mean number of labels per example,
    gold and predicted."""
    true_positives = (gold & predicted).sum(axis=0)
    n_gold, n_predicted = gold.sum(axis=0), predicted.sum(axis=0)
    precision, recall = ratio(true_positives, n_predicted), ratio(true_positives, n_gold)
    f1 = ratio(2 * true_positives, n_gold + n_predicted)
    examples = len(gold)
    return {
        "micro_precision": float(ratio(true_positives.sum(), n_predicted.sum())),
        "micro_recall": float(ratio(true_positives.sum(), n_gold.sum())),
        "micro_f1": float(ratio(2 * true_positives.sum(), n_gold.sum() + n_predicted.sum())),
        "macro_precision": float(precision.mean()) if labels else 0.0,
        "macro_recall": float(recall.mean()) if labels else 0.0,
        "macro_f1": float(f1.mean()) if labels else 0.0,
        "subset_accuracy": float((gold == predicted).all(axis=1).mean()) if examples else 0.0,
        "hamming_loss": float((gold != predicted).mean()) if gold.size else 0.0,
        "label_cardinality_gold": float(gold.sum(axis=1).mean()) if examples else 0.0,
        "label_cardinality_predicted": float(predicted.sum(axis=1).mean()) if examples else 0.0,
        "num_examples": examples,
        "num_without_predicted_labels": int((~predicted.any(axis=1)).sum()),
        "per_label": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(n_gold[i])} for i, name in enumerate(labels)},
    }


def best_threshold(scores: np.ndarray) -> float:
    """The grid threshold with the highest score; of equal ones, the closest to 0.5 (the lower
    of two equally close)."""
    top = scores.max()
    tied = np.flatnonzero(scores >= top - 1e-12)
    return float(THRESHOLD_GRID[tied[np.argmin(np.abs(THRESHOLD_GRID[tied] - DEFAULT_THRESHOLD))]])


def f1_by_threshold(gold: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(thresholds, labels): each label's F1 when predicted at each grid threshold."""
    return np.stack([label_f1(gold, scores >= t) for t in THRESHOLD_GRID])


def macro_f1_statistic(gold: np.ndarray, predicted: np.ndarray) -> Resampled:
    """Macro F1 for the bootstrap: per example and label the true positive, predicted and gold
    counts; a resample's macro F1 is the mean over labels of F1 from their sums."""
    labels = gold.shape[1]
    columns = np.concatenate([gold & predicted, predicted, gold], axis=1).astype(np.float64)

    def macro(sums: np.ndarray) -> np.ndarray:
        tp, n_predicted, n_gold = (sums[..., k * labels:(k + 1) * labels] for k in range(3))
        return ratio(2 * tp, n_predicted + n_gold).mean(axis=-1)

    return Resampled("macro_f1", columns, macro)


def name_list(value: Any) -> list[str]:
    """Names given as a YAML list or as comma-separated text."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


class MultiLabelClassificationTask(TaskBase):
    name: ClassVar[str] = "multi-label-classification"
    description: ClassVar[str] = ("Multi-label classification of a text or a pair (any number of labels per "
                                  "example), tuned decision thresholds, e.g. emotions, topics")
    pipeline_tag: ClassVar[str | None] = "text-classification"
    head_modules: ClassVar[tuple[str, ...]] = ("classifier",)
    default_metric: ClassVar[str] = "macro_f1"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "hamming_loss"})
    default_columns: ClassVar[dict[str, str]] = {"label_column": "labels"}
    # the transformers head of BERT reads the pooler; transformers_model drops it where a head does not
    uses_pooler: bool = True
    reads_first_token_only: bool = True
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("label_separator", None, "split the label column's text on this (',' for '4,27'); null: "
                   "text is one label, a list is the labels"),
        TaskOption("label_columns", None, "one 0/1 column per label instead of a label column (comma list); "
                   "the column names are the label names"),
        TaskOption("label_names", None, "the label set: a file with one name per line (a name's id is its line, "
                   "from 0) or a comma list; integer labels are ids into it"),
        TaskOption("threshold", None, "predict a label at this probability instead of tuning a threshold on "
                   "validation (null: tune)", kind="number", minimum=0, maximum=1, exclusive_minimum=True,
                   exclusive_maximum=True, optional=True),
        TaskOption("prior_bias", True, "start each label's output bias at the log-odds of its share of the "
                   "training examples, so training starts from the label prior instead of 0.5 for every label",
                   kind="flag"),
        TaskOption("per_label_threshold", False, "tune one threshold per label (each for its own F1) instead "
                   "of one for all (for macro F1)", kind="flag"),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = options = self.read_options()
        self.separator = self._separator(options["label_separator"])
        self.label_columns = name_list(options["label_columns"]) if options["label_columns"] is not None else []
        self._check_layout_options()
        fixed = options["threshold"]
        self.threshold: float | dict[str, float] = float(fixed) if fixed is not None else DEFAULT_THRESHOLD
        self.labels: list[str] = []
        self.label_to_id: dict[str, int] = {}
        self.integer_ids = False  # integer labels are ids into ``labels`` (label_names was given)
        self.pairs = False
        # each label's share of the training examples (after ``setup``), for ``prior_bias``
        self.label_prior: np.ndarray | None = None
        self.tokenizer: Any = None
        self._collator: InputPadder | None = None

    # -- options -----------------------------------------------------------------------------
    @staticmethod
    def _separator(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value == "":
            raise TaskError(f"task_options.label_separator: {value!r} is not allowed; give the text that separates "
                            f"labels, e.g. ','")
        return value

    def _check_layout_options(self) -> None:
        options = self.options
        if options["label_columns"] is not None:
            if not self.label_columns:
                raise TaskError(f"task_options.label_columns: {options['label_columns']!r} is not allowed; give "
                                f"the label columns, e.g. a,b,c")
            repeated = sorted({c for c in self.label_columns if self.label_columns.count(c) > 1})
            if repeated:
                raise TaskError(f"task_options.label_columns: {', '.join(repeated)} named twice")
            for other in ("label_separator", "label_names"):
                if options[other] is not None:
                    raise TaskError(f"task_options.{other}: goes with a label column; with label_columns the "
                                    f"columns are the labels")
        names = options["label_names"]
        if names is not None and not (isinstance(names, (str, list)) and name_list(names)):
            raise TaskError(f"task_options.label_names: {names!r} is not allowed; give a file with one name per "
                            f"line or a comma list")
        if options["per_label_threshold"] and options["threshold"] is not None:
            raise TaskError("task_options.per_label_threshold: tunes thresholds, so it cannot go with a fixed "
                            "threshold; leave one of them out")

    def _given_label_names(self) -> list[str] | None:
        """``label_names`` read: a file's lines (each line a name, none empty) or a comma list."""
        value = self.options["label_names"]
        if value is None:
            return None
        if isinstance(value, str) and Path(value).is_file():
            lines = Path(value).read_text(encoding="utf-8-sig").splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    raise TaskError(f"{value} line {number}: empty label name (a name's id is its line)")
            names = [line.strip() for line in lines]
            source = value
        elif isinstance(value, list) or "," in value:
            names, source = name_list(value), "task_options.label_names"
        else:
            raise TaskError(f"task_options.label_names: {value} is not a file (nor a comma list of names)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TaskError(f"{source}: label {', '.join(repeated)} named twice")
        if not names:
            raise TaskError(f"{source}: no label names")
        return names

    # -- columns -----------------------------------------------------------------------------
    def text_columns(self) -> list[str]:
        pair = [self.settings.text_pair_column] if self.pairs else []
        return [self.settings.text_column, *pair]

    def gold_columns(self) -> list[str]:
        return list(self.label_columns) or [self.settings.label_column]

    def _column_hints(self) -> dict[str, str]:
        hints = {self.settings.text_column: "--text-column", self.settings.text_pair_column: "--text-pair-column",
                 self.settings.label_column: "--label-column"}
        return hints | {column: "-o label_columns" for column in self.label_columns}

    # -- reading labels ----------------------------------------------------------------------
    def _row_labels(self, row: dict[str, Any], here: str) -> list[str]:
        """The label names of one row as given (ids turned into names), each once; unknown names
        are left for the caller to refuse."""
        if self.label_columns:
            found = []
            for column in self.label_columns:
                value = row[column]
                flag = FLAG_VALUES.get(label_name(value)) if isinstance(value, (str, int, float, bool)) else None
                if flag is None:
                    raise DataError(f"{here}: column '{column}' holds {value!r}; a label column holds 0 or 1")
                if flag:
                    found.append(column)
            return found
        value = row[self.settings.label_column]
        if value is None:
            items: list[Any] = []
        elif isinstance(value, list):
            items = value
        elif isinstance(value, str) and self.separator is not None:
            items = value.split(self.separator)
        else:
            items = [value]
        names = []
        for item in items:
            if item is None or isinstance(item, (list, dict)):
                raise DataError(f"{here}: column '{self.settings.label_column}' holds {item!r}, which is no label")
            name = label_name(item)
            if name:
                names.append(self._name_of(name, here))
        return list(dict.fromkeys(names))

    def _name_of(self, name: str, here: str) -> str:
        """A label as read; with ``label_names``, an integer is the id of a name."""
        if not (self.integer_ids and INTEGER.fullmatch(name)):
            return name
        index = int(name)
        if not 0 <= index < len(self.labels):
            raise DataError(f"{here}: label id {index} is out of range (0-{len(self.labels) - 1})")
        return self.labels[index]

    def _label_sets(self, rows: Iterable[dict[str, Any]], source: str) -> list[list[str]]:
        """Every row's label names, in the training label set (an unknown label is an error naming
        the file and line)."""
        sets = []
        for row in rows:
            here = where(source, row)
            names = self._row_labels(row, here)
            for name in names:
                if name not in self.label_to_id:
                    raise DataError(f"{here}: label '{name}' {self._unknown_label_reason()}")
            sets.append(names)
        return sets

    def _unknown_label_reason(self) -> str:
        shown = ", ".join(self.labels[:12]) + (f", ... ({len(self.labels)} in all)" if len(self.labels) > 12 else "")
        if self.integer_ids:
            return f"is not among label_names ({shown})"
        return f"was never seen in training (training labels: {shown})"

    def gold_matrix(self, raw: Dataset, source: str = "data") -> np.ndarray:
        """(examples, labels): which labels each example of a split has."""
        return self._multi_hot(self._label_sets(iter_rows(raw, self.gold_columns()), source))

    def _multi_hot(self, label_sets: list[list[str]]) -> np.ndarray:
        gold = np.zeros((len(label_sets), len(self.labels)), dtype=bool)
        for i, names in enumerate(label_sets):
            gold[i, [self.label_to_id[n] for n in names]] = True
        return gold

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        train = raw["train"]
        # pairs when the data has the pair column, or the run names one (a misspelt name is then an
        # error, not a silent single-text run)
        self.pairs = (self.settings.text_pair_column in train.column_names
                      or self.settings.text_pair_column != TaskSettings.text_pair_column)
        require_columns(train, self.text_columns() + self.gold_columns(), sources["train"], self._column_hints())
        given = self._given_label_names()
        if self.label_columns:
            self.set_labels(self.label_columns)
        elif given is not None:
            self.integer_ids = True
            self.set_labels(given)
        else:
            seen = {name for row in iter_rows(train, self.gold_columns())
                    for name in self._row_labels(row, where(sources["train"], row))}
            if not seen:
                raise TaskError(f"{sources['train']}: no example has a label; multi-label classification needs "
                                f"labels (or give label_names)")
            self.set_labels(sort_labels(seen))
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])
        self.label_prior = self.gold_matrix(train, sources["train"]).mean(axis=0)

    def set_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        labelled = split != "predict"
        require_columns(raw, self.text_columns() + (self.gold_columns() if labelled else []), source,
                        self._column_hints())
        require_text(raw, self.text_columns(), source)
        if labelled and self.labels:
            self._label_sets(iter_rows(raw, self.gold_columns()), source)

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer, extra=())

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "label_ids": self.integer_ids, "label_columns": self.label_columns,
                "pairs": self.pairs, "threshold": self.threshold}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.set_labels(list(state["labels"]))
        self.integer_ids = bool(state.get("label_ids"))
        self.label_columns = list(state.get("label_columns") or [])
        self.pairs = bool(state.get("pairs"))
        if self.options["threshold"] is None:
            self.threshold = state["threshold"]
        self._set_tokenizer(tokenizer)

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        """The architecture's transformers classifier with one sigmoid output per label; its head
        modules are the ones LoRA saves and ``head_learning_rate`` trains."""
        if not has_transformers_head(AutoModelForSequenceClassification, encoder.config):
            raise TaskError(f"{self.name} needs an encoder that transformers has a sequence-classification class "
                            f"for; {type(encoder).__name__} has none")
        model = transformers_model(
            AutoModelForSequenceClassification, encoder, num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id=dict(self.label_to_id),
            problem_type="multi_label_classification",
        )
        self.head_modules = head_module_names(model)
        if self.options["prior_bias"] and self.label_prior is not None:
            self._start_from_the_prior(model)
        return model

    def _start_from_the_prior(self, model: nn.Module) -> None:
        """Set the output layer's biases to the log-odds of the labels' training shares. A new head
        starts at probability 0.5 for every label, so with rare labels (most of GoEmotions' 28 are
        on under 5% of the examples) the first part of training only pulls every output down to
        its base rate; starting there, the gradient goes to telling examples apart at once.
        Only a newly built model: a loaded one gets its trained weights after this."""
        outputs = [module for name in self.head_modules for module in getattr(model, name).modules()
                   if isinstance(module, nn.Linear) and module.out_features == len(self.labels)]
        if not outputs or outputs[-1].bias is None:
            return
        share = np.clip(self.label_prior, PRIOR_CLIP, 1 - PRIOR_CLIP)
        with torch.no_grad():
            outputs[-1].bias.copy_(torch.from_numpy(np.log(share / (1 - share))))

    # -- features ----------------------------------------------------------------------------
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        texts = [batch[c] for c in self.text_columns()]
        truncation = "longest_first" if self.pairs else True
        encoded = self.tokenizer(*texts, truncation=truncation, max_length=self.settings.max_length)
        out = {k: encoded[k] for k in MODEL_INPUTS if k in encoded}
        out["example_index"] = batch[ROW_INDEX]
        if split != "predict":
            columns = self.gold_columns()
            rows = (dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns)))
            out["labels"] = self._multi_hot(self._label_sets(rows, "data")).astype(np.float32).tolist()
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._collator is not None, "setup() or load_state() first"
        batch = self._collator(features)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return text_examples(self.name, inputs, self.settings, pairs=self.pairs)

    # -- outputs -----------------------------------------------------------------------------
    def thresholds(self) -> np.ndarray:
        """The decision threshold of every label, in label order."""
        if isinstance(self.threshold, dict):
            return np.array([self.threshold[name] for name in self.labels], dtype=np.float64)
        return np.full(len(self.labels), float(self.threshold))

    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """Each example's labels at or above their threshold, most probable first, and the
        probability of every label (which ``calibrate`` and the metrics decide from again)."""
        example_of = np.asarray(column_values(features, "example_index"))
        probabilities = np.zeros((len(raw), len(self.labels)), dtype=np.float32)
        for indices, arrays in outputs:
            probabilities[example_of[indices]] = 1.0 / (1.0 + np.exp(-arrays["logits"].astype(np.float64)))
        thresholds = self.thresholds()
        predictions = []
        for row in probabilities.tolist():
            chosen = sorted((k for k, p in enumerate(row) if p >= thresholds[k]), key=lambda k: (-row[k], k))
            predictions.append({"labels": [{"label": self.labels[k], "score": row[k]} for k in chosen],
                                "scores": dict(zip(self.labels, row))})
        return predictions

    def score_matrix(self, predictions: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[p["scores"][name] for name in self.labels] for p in predictions],
                        dtype=np.float64).reshape(len(predictions), len(self.labels))

    def decisions(self, predictions: list[dict[str, Any]]) -> np.ndarray:
        """(examples, labels): the labels predicted at the current thresholds."""
        return self.score_matrix(predictions) >= self.thresholds()

    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> bool:
        """Tune the threshold on the validation predictions: one for all labels, for the best
        macro F1; or, with ``per_label_threshold``, each label's own for its best F1 (a label
        without validation examples keeps the one for all). Ties go to the threshold closest
        to 0.5. A fixed ``threshold`` is not tuned."""
        if self.options["threshold"] is not None:
            return False
        gold = self.gold_matrix(raw, "validation")
        f1s = f1_by_threshold(gold, self.score_matrix(predictions))
        overall = best_threshold(f1s.mean(axis=1))
        if not self.options["per_label_threshold"]:
            self.threshold = overall
            return True
        has_examples = gold.any(axis=0)
        self.threshold = {name: best_threshold(f1s[:, k]) if has_examples[k] else overall
                          for k, name in enumerate(self.labels)}
        return True

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        """The set metrics at the current thresholds (a threshold tuned after predicting applies,
        as every prediction keeps the probability of every label)."""
        metrics = multi_label_metrics(self.gold_matrix(raw), self.decisions(predictions), self.labels)
        metrics["threshold"] = self.threshold
        return metrics

    # -- report ------------------------------------------------------------------------------
    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The scores, set-level figures, thresholds and per-label figures as tables; micro and
        macro F1, subset accuracy and Hamming loss with per-example statistics for their
        intervals; the per-label chart, macro F1 by threshold, and the examples with the most
        wrong labels."""
        gold, predicted = self.gold_matrix(raw), self.decisions(predictions)
        statistics = [
            *micro_prf("micro_", (gold & predicted).sum(axis=1), predicted.sum(axis=1), gold.sum(axis=1)),
            macro_f1_statistic(gold, predicted),
            mean_of("subset_accuracy", (gold == predicted).all(axis=1)),
            mean_of("hamming_loss", (gold != predicted).mean(axis=1)),
        ]
        scores = table("Scores", ["averaging", "precision", "recall", "F1"],
                       [[kind, metrics[f"{kind}_precision"], metrics[f"{kind}_recall"], metrics[f"{kind}_f1"]]
                        for kind in ("micro", "macro")])
        set_rows = [["subset accuracy (exact label set)", metrics["subset_accuracy"]],
                    ["Hamming loss (wrong example-label decisions)", metrics["hamming_loss"]],
                    ["labels per example, gold", metrics["label_cardinality_gold"]],
                    ["labels per example, predicted", metrics["label_cardinality_predicted"]],
                    ["examples without a predicted label", metrics["num_without_predicted_labels"]],
                    ["examples", metrics["num_examples"]]]
        if "loss" in metrics:
            set_rows.append(["loss", metrics["loss"]])
        return ReportContent(
            summary=[scores, table("Label sets", ["metric", "value"], set_rows), self._threshold_table(),
                     per_label_table(metrics["per_label"])],
            headline=[("micro F1", "micro_f1"), ("macro F1", "macro_f1"), ("subset accuracy", "subset_accuracy"),
                      ("Hamming loss", "hamming_loss")],
            bootstrap=statistics,
            sections=[Section("Per label", [per_label_chart(metrics["per_label"])]),
                      self._threshold_section(gold, self.score_matrix(predictions)),
                      self._errors(raw, gold, predicted)],
        )

    def _threshold_table(self) -> Any:
        how = "fixed (task_options.threshold)" if self.options["threshold"] is not None else "tuned on validation"
        if isinstance(self.threshold, dict):
            rows = [[name, self.threshold[name]] for name in self.labels]
        else:
            rows = [["every label", self.threshold]]
        return table(f"Decision thresholds ({how})", ["label", "threshold"], rows)

    def _threshold_section(self, gold: np.ndarray, scores: np.ndarray) -> Section:
        macro = f1_by_threshold(gold, scores).mean(axis=1)
        markers = [] if isinstance(self.threshold, dict) else [(self.threshold, "threshold in use")]
        return Section("Threshold", [curve("Macro F1 with one threshold for every label", "threshold", "macro F1",
                                           {"macro F1": (THRESHOLD_GRID, macro)}, markers)],
                       note="What one threshold for all labels would score on this split.")

    def _errors(self, raw: Dataset, gold: np.ndarray, predicted: np.ndarray) -> Section:
        wrong = (gold != predicted).sum(axis=1)
        order = sorted(np.flatnonzero(wrong).tolist(), key=lambda i: (-wrong[i], i))
        columns = self.text_columns()
        place, places = row_places(raw)
        texts = [column_values(raw, c) for c in columns]

        def names(row: np.ndarray) -> str:
            return ", ".join(self.labels[k] for k in np.flatnonzero(row)) or "(none)"

        rows = [[places[i], *[t[i] for t in texts], names(gold[i]), names(predicted[i]),
                 names(gold[i] & ~predicted[i]), names(predicted[i] & ~gold[i])] for i in order[:MAX_EXAMPLES]]
        note = (f"{len(order)} of {len(gold)} examples have a wrong label set; these are the {len(rows)} with the "
                f"most wrong labels.")
        return Section("Most wrong label sets", [
            table("Most wrong label sets", [place, *columns, "gold", "predicted", "missed",
                                            "extra"], rows)], note=note)

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """How many examples carry each label (for the model card)."""
        counts = self.gold_matrix(raw).sum(axis=0)
        return {name: int(counts[k]) for k, name in enumerate(self.labels)}

