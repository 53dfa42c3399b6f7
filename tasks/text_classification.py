"""``text-classification``: one text, one label out of any number of classes; and
``pair-classification``: the same for two texts encoded as one sequence, ``first [SEP] second``
(natural language inference, paraphrase detection, question-answer matching). Token type ids
mark the two segments where the encoder has them; when a pair is longer than ``max_length`` the
longer text is truncated first.

By default (``pooling=transformers``) the model is the encoder's architecture with its own
transformers sequence-classification head (``AutoModelForSequenceClassification``: BERT's
pretrained pooler + dropout + linear, RoBERTa's dense + tanh + out_proj, ...); it is saved as
that class saves itself, so transformers and ``pipeline("text-classification")`` load the
directory as it is. The ``pooling`` option (``task_options``) picks a finetune-kit head instead,
dropout + linear on: the first ([CLS]) vector (``cls``, the earlier default, which models saved
without a recorded head still load as), the mask-weighted mean of the token vectors
(``mean``, the pooling sentence-embedding encoders such as all-MiniLM-L6-v2 were trained with),
or the [CLS] vector through the encoder's pretrained dense+tanh pooler (``pooler``). Loss:
cross-entropy.
Labels may be strings or integers in the files; the label set is taken from the training
split (integers sorted numerically, strings alphabetically) and saved with the model.
"""

from __future__ import annotations

from collections import Counter
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
from finetune_kit.data import LINE_COLUMN, line_numbers, require_columns, row_places, where
from finetune_kit.heads import (
    has_transformers_head,
    head_dropout,
    head_module_names,
    transformers_model,
)
from finetune_kit.metrics import classification_metrics
from finetune_kit.modeling import drop_pooler
from finetune_kit.report_content import (
    MAX_EXAMPLES,
    ReportContent,
    Section,
    confusion_heatmaps,
    confusion_table,
    per_label_chart,
    per_label_table,
    table,
)
from finetune_kit.stats import macro_and_weighted_f1, mean_of
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

# The ``pooling`` value that builds the architecture's own transformers head (the default).
TRANSFORMERS_HEAD = "transformers"
# The head of models whose saved state does not name one: the default before the transformers head.
OLD_DEFAULT_POOLING = "cls"
# The pooling values that read the encoder's pooler layer (BERT's transformers head reads it too).
POOLER_READERS = frozenset({TRANSFORMERS_HEAD, "pooler"})

OPTION_FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column"}


class SequenceClassifier(nn.Module):
    """Encoder + dropout + linear head on the first token's vector."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "cls") -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(head_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        hidden = self.encoder(**inputs).last_hidden_state
        if self.pooling == "mean":
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        elif self.pooling == "pooler":
            pooled = self.encoder.pooler(hidden)
        else:
            pooled = hidden[:, 0]
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class TextClassificationTask(TaskBase):
    name: ClassVar[str] = "text-classification"
    description: ClassVar[str] = ("Single-text classification (the encoder's transformers classification head), "
                                  "e.g. sentiment, topic, intent")
    pipeline_tag: ClassVar[str | None] = "text-classification"
    head_modules: ClassVar[tuple[str, ...]] = ("classifier",)
    default_metric: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("pooling", TRANSFORMERS_HEAD, "the head: the architecture's own transformers classification "
                   "head, or a linear layer on the first token's vector, the mean of the tokens', or the first "
                   "token's through the encoder's pooler", kind="choice",
                   choices=(TRANSFORMERS_HEAD, "cls", "mean", "pooler")),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = self.read_options()  # a bad option fails now, before any data is read
        self.labels: list[str] = []
        self.label_to_id: dict[str, int] = {}
        self.tokenizer: Any = None
        self._collator: InputPadder | None = None

    @property
    def pooling(self) -> str:
        return self.options["pooling"]

    @property
    def uses_pooler(self) -> bool:
        """The encoder is loaded with its pooler: ``pooler`` reads it, and so may the transformers
        head (BERT's does; ``transformers_model`` drops it where the architecture's does not)."""
        return self.pooling in POOLER_READERS

    @property
    def reads_first_token_only(self) -> bool:
        return self.pooling != "mean"

    # -- columns -----------------------------------------------------------------------------
    def text_columns(self) -> list[str]:
        return [self.settings.text_column]

    def _column_hints(self) -> dict[str, str]:
        return {
            self.settings.text_column: "--text-column",
            self.settings.text_pair_column: "--text-pair-column",
            self.settings.label_column: "--label-column",
        }

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        self.validate_columns(raw["train"], "train", sources["train"])
        self.set_labels(sort_labels(label_name(v) for v in column_values(raw["train"], self.settings.label_column)))
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])

    def validate_columns(self, raw: Dataset, split: str, source: str) -> None:
        needed = self.text_columns() + ([] if split == "predict" else [self.settings.label_column])
        require_columns(raw, needed, source, self._column_hints())

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        self.validate_columns(raw, split, source)
        columns = self.text_columns() + ([] if split == "predict" else [self.settings.label_column])
        lines = line_numbers(raw) or [None] * len(raw)
        values = {column: column_values(raw, column) for column in columns}
        for column in columns:
            for line, value in zip(lines, values[column]):
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise DataError(f"{where(source, {LINE_COLUMN: line})}: column '{column}' is empty")
                if column != self.settings.label_column and not isinstance(value, str):
                    raise DataError(f"{where(source, {LINE_COLUMN: line})}: column '{column}' is not text "
                                    f"({type(value).__name__})")
        if split != "predict" and self.labels:
            for line, value in zip(lines, values[self.settings.label_column]):
                if label_name(value) not in self.label_to_id:
                    raise DataError(
                        f"{where(source, {LINE_COLUMN: line})}: label '{label_name(value)}' was never seen in "
                        f"training (training labels: {', '.join(self.labels)})"
                    )

    def set_labels(self, labels: list[str]) -> None:
        if len(labels) < 2:
            raise TaskError(f"the training data has {len(labels)} label(s) ({', '.join(labels)}); "
                            f"classification needs at least 2")
        self.labels = labels
        self.label_to_id = {label: i for i, label in enumerate(labels)}

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer)

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "pooling": self.pooling}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        """A model saved before the head was recorded has the head of its options, else ``cls``,
        the default of that time."""
        self.options["pooling"] = state.get("pooling", self.settings.options.get("pooling", OLD_DEFAULT_POOLING))
        self.set_labels(list(state["labels"]))
        self._set_tokenizer(tokenizer)

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        if self.pooling == TRANSFORMERS_HEAD:
            if has_transformers_head(AutoModelForSequenceClassification, encoder.config):
                return self._transformers_model(encoder)
            # an architecture transformers has no classifier of (shipped code): the earlier default,
            # which state() records, so that the model loads as it was built
            self.options["pooling"] = OLD_DEFAULT_POOLING
            drop_pooler(encoder)
        if self.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise TaskError(f"task_options.pooling: 'pooler' needs an encoder with a pooler layer; "
                            f"{type(encoder).__name__} has none (use cls or mean)")
        return SequenceClassifier(encoder, len(self.labels), self.pooling)

    def _transformers_model(self, encoder: nn.Module) -> nn.Module:
        """``AutoModelForSequenceClassification`` of the encoder's architecture, with the labels in
        its configuration; its head modules are the ones LoRA saves and ``head_learning_rate`` trains."""
        model = transformers_model(
            AutoModelForSequenceClassification, encoder, num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id=dict(self.label_to_id),
            problem_type="single_label_classification",
        )
        self.head_modules = head_module_names(model)
        return model

    # -- features ----------------------------------------------------------------------------
    def tokenize(self, batch: dict[str, list]) -> dict[str, list]:
        return self.tokenizer(batch[self.settings.text_column], truncation=True, max_length=self.settings.max_length)

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        encoded = self.tokenize(batch)
        out = {k: encoded[k] for k in MODEL_INPUTS if k in encoded}
        out["example_index"] = batch[ROW_INDEX]
        if split != "predict":
            out["labels"] = [self.label_to_id[label_name(v)] for v in batch[self.settings.label_column]]
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._collator is not None, "setup() or load_state() first"
        return self._collator(features)

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return text_examples(self.name, inputs, self.settings)

    # -- outputs -----------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        example_of = np.asarray(column_values(features, "example_index"))
        probabilities = np.zeros((len(raw), len(self.labels)), dtype=np.float32)
        for indices, arrays in outputs:
            logits = arrays["logits"]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities[example_of[indices]] = shifted / shifted.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        return [{"label": self.labels[b], "score": float(probabilities[i, b])} for i, b in enumerate(best)]

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        gold = [label_name(v) for v in column_values(raw, self.settings.label_column)]
        return classification_metrics(gold, [p["label"] for p in predictions], self.labels)

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The main metrics, per-label figures and the confusion matrix as tables; headline
        metrics with their per-example statistics for the bootstrap; the per-label chart, the
        confusion matrix as heat maps, and the errors the model was most sure of."""
        gold = [label_name(v) for v in column_values(raw, self.settings.label_column)]
        predicted = [p["label"] for p in predictions]
        correct = [g == p for g, p in zip(gold, predicted)]
        statistics = [mean_of("accuracy", correct),
                      *macro_and_weighted_f1([self.label_to_id[g] for g in gold],
                                             [self.label_to_id[p] for p in predicted], len(self.labels))]
        main = [[k, metrics[k]] for k in ("accuracy", "macro_f1", "weighted_f1", "loss", "num_examples")
                if k in metrics]
        return ReportContent(
            summary=[table("Metrics", ["metric", "value"], main), per_label_table(metrics["per_label"]),
                     confusion_table(metrics["confusion_matrix"])],
            headline=[("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("weighted F1", "weighted_f1")],
            bootstrap=statistics,
            sections=[
                Section("Per label", [per_label_chart(metrics["per_label"])]),
                Section("Confusion matrix", confusion_heatmaps(metrics["confusion_matrix"])),
                self._confident_errors(predictions, raw, gold, correct),
            ],
        )

    def _confident_errors(self, predictions: list[dict[str, Any]], raw: Dataset, gold: list[str],
                          correct: list[bool]) -> Section:
        wrong = sorted((i for i, ok in enumerate(correct) if not ok), key=lambda i: (-predictions[i]["score"], i))
        columns = self.text_columns()
        place, places = row_places(raw)
        rows = [[places[i], *[raw[i][c] for c in columns], gold[i], predictions[i]["label"],
                 predictions[i]["score"]] for i in wrong[:MAX_EXAMPLES]]
        note = (f"{len(wrong)} of {len(gold)} examples are wrong; these are the {len(rows)} with the highest "
                f"predicted probability.")
        return Section("Most confident errors", [
            table("Most confident errors", [place, *columns, "gold", "predicted", "probability"],
                  rows)], note=note)

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """How many examples of each label a split has (for the model card)."""
        counts = Counter(label_name(v) for v in column_values(raw, self.settings.label_column))
        return {label: counts[label] for label in sorted(counts, key=lambda x: (x not in self.label_to_id,
                                                                                self.label_to_id.get(x, 0), x))}


class PairClassificationTask(TextClassificationTask):
    name: ClassVar[str] = "pair-classification"
    description: ClassVar[str] = "Sentence-pair classification (first [SEP] second), e.g. NLI entailment, paraphrase"

    def text_columns(self) -> list[str]:
        return [self.settings.text_column, self.settings.text_pair_column]

    def tokenize(self, batch: dict[str, list]) -> dict[str, list]:
        return self.tokenizer(
            batch[self.settings.text_column],
            batch[self.settings.text_pair_column],
            truncation="longest_first",
            max_length=self.settings.max_length,
        )

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return text_examples(self.name, inputs, self.settings, pairs=True)
