"""``text-regression``: one text in, one number out. An example third-party finetune-kit plugin.

Data: a text column (``text_column``, default ``text``) and a numeric target column
(``label_column``, default ``label``), e.g. a review and its 1-5 rating.

Model: the encoder's first ([CLS]) vector -> dropout -> ``Linear(hidden, 1)``, trained with
mean squared error. Targets are standardised with the training split's mean and standard
deviation (saved with the model), and predictions are mapped back to the original scale.

Predictions: ``{"score": float}``, one per input, in the target's own units.
Metrics: ``mse`` (picks the best checkpoint, lower is better), ``mae``, ``pearson`` and
``num_examples``, all on the original scale (the ``loss`` the loop adds is on the standardised one).
The evaluation report is ``TaskBase``'s default: a table of these metrics.

The package imports only ``finetune_kit`` (never the built-in plugins in ``finetune_kit_tasks``),
and is registered by one entry point in its ``pyproject.toml``::

    [project.entry-points."finetune_kit.tasks"]
    text-regression = "finetune_kit_example_plugin:TextRegressionTask"
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune_kit.batching import MODEL_INPUTS, InputPadder
from finetune_kit.columns import column_values
from finetune_kit.data import require_columns, where
from finetune_kit.heads import head_dropout
from finetune_kit.task import ROW_INDEX, DataError, OutputBatch, TaskBase, TaskError, TaskSettings, text_examples

__all__ = ["TextRegressionTask", "Regressor"]

def to_number(value: Any) -> float | None:
    """The finite float a target cell holds ("3.5" in CSV, 3.5 in JSON), or None if it holds none."""
    if isinstance(value, bool):  # JSON true/false is not a score
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Regressor(nn.Module):
    """Encoder + dropout + a linear layer giving one number per text from its [CLS] vector."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout(config))
        self.regressor = nn.Linear(config.hidden_size, 1)
        nn.init.normal_(self.regressor.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.regressor.bias)

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        hidden = self.encoder(**inputs).last_hidden_state
        scores = self.regressor(self.dropout(hidden[:, 0])).squeeze(-1)  # (batch,), standardised
        loss = nn.functional.mse_loss(scores.float(), labels.float()) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=scores)


class TextRegressionTask(TaskBase):
    """Predict a number from a text. See the module docstring for data, model and outputs."""

    name: ClassVar[str] = "text-regression"
    description: ClassVar[str] = "Single-text regression ([CLS] vector -> linear, MSE), e.g. a rating or a score"
    head_modules: ClassVar[tuple[str, ...]] = ("regressor",)
    default_metric: ClassVar[str] = "mse"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "mse", "mae"})

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.read_options()  # it declares no ``task_options``: any ``-o`` is refused, naming it
        self.mean, self.std = 0.0, 1.0  # target standardisation, from the training split
        self.tokenizer: Any = None
        self._collator: InputPadder | None = None

    # -- setup, validation and saved state ------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])
        targets = np.array([to_number(v) for v in raw["train"][self.settings.label_column]])
        self.mean = float(targets.mean())
        self.std = float(targets.std()) or 1.0  # all targets equal: nothing to scale
        self._set_tokenizer(tokenizer)

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        text, target = self.settings.text_column, self.settings.label_column
        columns = [text] if split == "predict" else [text, target]
        require_columns(raw, columns, source, {text: "--text-column", target: "--label-column"})
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        for row in raw:
            if not isinstance(row[text], str) or not row[text].strip():
                raise DataError(f"{where(source, row)}: column '{text}' is empty or not text")
            if split != "predict" and to_number(row[target]) is None:
                raise DataError(f"{where(source, row)}: column '{target}' must be a number, "
                                f"found {row[target]!r}")

    def state(self) -> dict[str, Any]:
        return {"target_mean": self.mean, "target_std": self.std}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.mean, self.std = float(state["target_mean"]), float(state["target_std"])
        self._set_tokenizer(tokenizer)

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer)

    # -- model and features -------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        return Regressor(encoder)

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        encoded = self.tokenizer(batch[self.settings.text_column], truncation=True,
                                 max_length=self.settings.max_length)
        out = {k: encoded[k] for k in MODEL_INPUTS if k in encoded}
        out["example_index"] = batch[ROW_INDEX]
        if split != "predict":
            out["labels"] = [(to_number(v) - self.mean) / self.std for v in batch[self.settings.label_column]]
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._collator is not None, "setup() or load_state() first"
        return self._collator(features)

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return text_examples(self.name, inputs, self.settings)

    # -- outputs ------------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        example_of = np.asarray(column_values(features, "example_index"))
        scores = np.zeros(len(raw), dtype=np.float64)
        for indices, arrays in outputs:
            scores[example_of[indices]] = arrays["logits"] * self.std + self.mean
        return [{"score": float(s)} for s in scores]

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        gold = np.array([to_number(v) for v in column_values(raw, self.settings.label_column)], dtype=np.float64)
        predicted = np.array([p["score"] for p in predictions], dtype=np.float64)
        errors = predicted - gold
        # Pearson's r is undefined when either side is constant; report 0.0 (no linear relation).
        pearson = float(np.corrcoef(gold, predicted)[0, 1]) if gold.std() > 0 and predicted.std() > 0 else 0.0
        return {"mse": float(np.mean(errors**2)), "mae": float(np.mean(np.abs(errors))),
                "pearson": pearson, "num_examples": len(gold)}
