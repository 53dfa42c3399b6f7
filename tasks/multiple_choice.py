"""``multiple-choice``: a question and a few candidate answers, one of them right (CommonsenseQA,
SWAG, ARC, RACE-style reading comprehension).

Each (question, choice) pair goes through the encoder as one sequence, ``question [SEP] choice``
(token type ids mark the two segments where the encoder has them); the model gives each pair one
score, and a softmax over the question's choices picks the answer. A pair longer than
``max_length`` loses tokens from the end of the question; the choice is only cut when it does not
fit even beside a one-token question.

The data comes in one of three layouts, told apart by the columns (``text_column`` is
``question`` and ``label_column`` is ``label`` unless the run sets them):

- CommonsenseQA's JSON Lines: ``question`` is an object ``{"stem": ..., "choices": [{"label": "A",
  "text": ...}, ...]}`` and ``answerKey`` (or the label column, where the data has one) names the
  right choice by its label;
- a ``choices`` column holding a list of texts (and optionally ``choice_labels``, their names),
  with ``label`` the index of the right one;
- flat columns ``choice0``, ``choice1``, ... (numbered from 0) with ``label`` the index of the
  right one, an integer or, in CSV and TSV, its digits. A row with fewer choices than the file has
  columns leaves the last ones empty.

``-o context_column=NAME`` puts that column's text before the question (SWAG: the context
sentence before the start of the ending). Questions may have different numbers of choices (a
batch is padded with empty choices, whose scores are -inf: they take no probability and no part
in the loss), unless ``-o num_choices=K`` asks for exactly K.

The model is the encoder's architecture with its own transformers multiple-choice head
(``AutoModelForMultipleChoice``: BERT's pooler + dropout + linear, RoBERTa's dense...), saved as
that class saves itself, so ``AutoModelForMultipleChoice.from_pretrained`` loads the directory as
it is. Only the forward of the model in hand is this task's (``score_real_choices_only``): it
runs the real choices alone through the encoder and masks the padded ones. Loss: cross-entropy
over each question's choices.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForMultipleChoice
from transformers.modeling_outputs import MultipleChoiceModelOutput

from finetune_kit.batching import MODEL_INPUTS, padded
from finetune_kit.columns import column_values
from finetune_kit.data import (
    INTERNAL_COLUMNS,
    ITEM_COLUMN,
    iter_rows,
    require_columns,
    row_places,
    where,
)
from finetune_kit.heads import (
    has_transformers_head,
    head_module_names,
    transformers_model,
)
from finetune_kit.report_content import (
    MAX_EXAMPLES,
    ReportContent,
    Section,
    bar_chart,
    table,
)
from finetune_kit.stats import mean_of
from finetune_kit.task import (
    ROW_INDEX,
    DataError,
    OutputBatch,
    TaskBase,
    TaskError,
    TaskOption,
    TaskSettings,
    label_name,
)

# The layouts a split may come in (see the module docstring).
NESTED, CHOICE_LIST, CHOICE_COLUMNS = "nested", "list", "columns"
CHOICES = "choices"  # the list layout's column of choice texts
CHOICE_NAMES = "choice_labels"  # ... and of their names, where given
CHOICE_PREFIX = "choice"  # the flat layout's columns: choice0, choice1, ...
ANSWER_KEY = "answerKey"  # CommonsenseQA's gold column
MIN_CHOICES = 2


@dataclass(frozen=True)
class Question:
    """One example, whatever its layout: the question text (its context put before it), the
    choices, their names where the layout has them (A-E), and the index of the right one."""

    text: str
    choices: list[str]
    names: list[str] | None
    answer: int | None

    def name_of(self, index: int) -> str:
        """A choice as the report names it: its label where it has one, else its index."""
        return self.names[index] if self.names else str(index)


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def layout_of(columns: Iterable[str], questions: Iterable[Any]) -> str | None:
    """The layout of a split (or of one batch of it): the question column's objects, a choices
    list column, or choice0, choice1, ... columns; None when there are no choices."""
    columns = set(columns)
    if any(isinstance(value, dict) for value in questions):
        return NESTED
    if CHOICES in columns:
        return CHOICE_LIST
    if f"{CHOICE_PREFIX}0" in columns:
        return CHOICE_COLUMNS
    return None


def choice_columns(columns: Iterable[str]) -> list[str]:
    """choice0, choice1, ... as far as they go without a gap."""
    columns = set(columns)
    found = []
    while f"{CHOICE_PREFIX}{len(found)}" in columns:
        found.append(f"{CHOICE_PREFIX}{len(found)}")
    return found


def score_real_choices_only(self: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            token_type_ids: torch.Tensor | None = None, choice_mask: torch.Tensor | None = None,
                            labels: torch.Tensor | None = None) -> MultipleChoiceModelOutput:
    """The forward of a transformers multiple-choice model in this task.

    ``input_ids`` (and the mask and token types) are (batch, choices, length), the questions with
    fewer choices padded with empty ones, which ``choice_mask`` (batch, choices) marks False. The
    real choices go through the class's own forward as one question of them all (it scores every
    row of its (rows, length) input alike), so no padded choice costs encoder time; the padded
    ones get a score of -inf, and the loss is the mean cross-entropy over the questions."""
    if choice_mask is None:
        choice_mask = torch.ones(input_ids.shape[:2], dtype=torch.bool, device=input_ids.device)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    real = {key: value[choice_mask].unsqueeze(0) for key, value in inputs.items() if value is not None}
    scores = type(self).forward(self, **real).logits.reshape(-1)
    logits = torch.full(choice_mask.shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    logits = logits.masked_scatter(choice_mask, scores)
    loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
    return MultipleChoiceModelOutput(loss=loss, logits=logits)


class MultipleChoiceTask(TaskBase):
    name: ClassVar[str] = "multiple-choice"
    description: ClassVar[str] = ("Multiple-choice questions (each question [SEP] choice scored, softmax over the "
                                  "choices), e.g. CommonsenseQA, SWAG")
    # A Hub task tag (hidden in the Hub's model filters); transformers has no pipeline of it.
    pipeline_tag: ClassVar[str | None] = "multiple-choice"
    head_modules: ClassVar[tuple[str, ...]] = ("classifier",)  # the built model's own, once it is built
    default_metric: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    default_columns: ClassVar[dict[str, str]] = {"text_column": "question"}
    # BERT's multiple-choice head reads the pretrained pooler (``transformers_model`` drops it
    # for architectures whose head does not).
    uses_pooler: bool = True
    reads_first_token_only: bool = True
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("num_choices", None, "the number of choices every question must have (null: any number, "
                   "at least 2)", kind="int", minimum=MIN_CHOICES, optional=True),
        TaskOption("context_column", None, "a column whose text goes before the question (SWAG's context); "
                   "null: none", kind="any"),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = self.read_options()  # a bad option fails now, before any data is read
        context = self.options["context_column"]
        if context is not None and (not isinstance(context, str) or not context.strip()):
            raise TaskError(f"task_options.context_column: {context!r} is not allowed; give a column name or null")
        self.tokenizer: Any = None

    @property
    def context_column(self) -> str | None:
        return self.options["context_column"]

    # -- reading the layouts -------------------------------------------------------------------
    def _layout(self, raw: Dataset, source: str) -> str:
        columns = raw.column_names
        questions = column_values(raw, self.settings.text_column) if self.settings.text_column in columns else []
        layout = layout_of(columns, questions)
        if layout is None:
            shown = ", ".join(c for c in columns if c not in INTERNAL_COLUMNS)
            raise DataError(f"{source}: no choices found; give columns {CHOICE_PREFIX}0, {CHOICE_PREFIX}1, ... or a "
                            f"'{CHOICES}' list column, or '{self.settings.text_column}' objects with stem and choices "
                            f"(CommonsenseQA); the columns are {shown}")
        return layout

    def _label_column(self, columns: Iterable[str], layout: str) -> str:
        """The gold column: the run's label column, or CommonsenseQA's answerKey where the nested
        layout has no column of that name."""
        columns = set(columns)
        if layout == NESTED and self.settings.label_column not in columns and ANSWER_KEY in columns:
            return ANSWER_KEY
        return self.settings.label_column

    def _needed_columns(self, columns: list[str], layout: str, labelled: bool) -> list[str]:
        needed = [self.settings.text_column] + ([self.context_column] if self.context_column else [])
        return needed + ([self._label_column(columns, layout)] if labelled else [])

    def _question(self, row: dict[str, Any], layout: str, label_column: str | None, source: str) -> Question:
        """One row as a ``Question``, checked: a one-line ``DataError`` naming the file and line
        for an empty text, too few or too many choices, or a gold answer that is none of them."""
        place = where(source, row)
        text_column = self.settings.text_column
        question = row.get(text_column)
        if layout == NESTED:
            if not isinstance(question, dict):
                raise DataError(f"{place}: column '{text_column}' is not an object with stem and choices")
            text, choices, names = self._nested_parts(question, place)
        else:
            text = self._text(question, text_column, place)
            choices, names = (self._listed_choices(row, place) if layout == CHOICE_LIST
                              else self._column_choices(row, place))
        if self.context_column:
            text = f"{self._text(row.get(self.context_column), self.context_column, place)} {text}"
        self._check_count(len(choices), place)
        answer = None
        if label_column is not None:
            answer = (self._answer_by_name(row.get(label_column), names or [], label_column, place) if layout == NESTED
                      else self._answer_by_index(row.get(label_column), len(choices), label_column, place))
        return Question(text, choices, names, answer)

    @staticmethod
    def _text(value: Any, what: str, place: str) -> str:
        if is_blank(value):
            raise DataError(f"{place}: column '{what}' is empty")
        if not isinstance(value, str):
            raise DataError(f"{place}: column '{what}' is not text ({type(value).__name__})")
        return value

    def _nested_parts(self, question: dict[str, Any], place: str) -> tuple[str, list[str], list[str]]:
        column = self.settings.text_column
        text = self._text(question.get("stem"), f"{column}.stem", place)
        listed = question.get("choices")
        if not isinstance(listed, list):
            raise DataError(f"{place}: {column}.choices is not a list of choices")
        choices, names = [], []
        for index, choice in enumerate(listed):
            if not isinstance(choice, dict):
                raise DataError(f"{place}: {column}.choices[{index}] is not an object with label and text")
            choices.append(self._text(choice.get("text"), f"{column}.choices[{index}].text", place))
            names.append(label_name(self._text(choice.get("label"), f"{column}.choices[{index}].label", place)))
        repeated = [name for name, count in Counter(names).items() if count > 1]
        if repeated:
            raise DataError(f"{place}: choice label '{repeated[0]}' is given to more than one choice")
        return text, choices, names

    def _listed_choices(self, row: dict[str, Any], place: str) -> tuple[list[str], list[str] | None]:
        listed = row.get(CHOICES)
        if not isinstance(listed, list):
            raise DataError(f"{place}: column '{CHOICES}' is not a list of choices")
        choices = [self._text(choice, f"{CHOICES}[{index}]", place) for index, choice in enumerate(listed)]
        names = row.get(CHOICE_NAMES)
        if names is not None:
            if not isinstance(names, list) or len(names) != len(choices):
                raise DataError(f"{place}: column '{CHOICE_NAMES}' must list one name per choice")
            names = [label_name(name) for name in names]
        return choices, names

    def _column_choices(self, row: dict[str, Any], place: str) -> tuple[list[str], None]:
        """choice0, choice1, ...; the empty ones at the end are no choices (a question with fewer
        choices than the file has columns), an empty one before a given one is an error."""
        values = [row.get(column) for column in choice_columns(row)]
        while values and is_blank(values[-1]):
            values.pop()
        return [self._text(value, f"{CHOICE_PREFIX}{index}", place) for index, value in enumerate(values)], None

    def _check_count(self, count: int, place: str) -> None:
        wanted = self.options["num_choices"]
        counted = f"{count} choice{'' if count == 1 else 's'}"
        if wanted is not None and count != wanted:
            raise DataError(f"{place}: {counted}; num_choices is {wanted}")
        if count < MIN_CHOICES:
            raise DataError(f"{place}: {counted}; a question needs at least {MIN_CHOICES}")

    @staticmethod
    def _answer_by_index(value: Any, count: int, column: str, place: str) -> int:
        if is_blank(value):
            raise DataError(f"{place}: column '{column}' is empty")
        text = label_name(value)
        if not (isinstance(value, (int, float, str)) and not isinstance(value, bool) and text.isdigit()):
            raise DataError(f"{place}: {column} '{text}' is not the index of a choice (0 to {count - 1})")
        if int(text) >= count:
            raise DataError(f"{place}: {column} {text} is out of range: {count} choices, indices 0 to {count - 1}")
        return int(text)

    @staticmethod
    def _answer_by_name(value: Any, names: list[str], column: str, place: str) -> int:
        if is_blank(value):
            raise DataError(f"{place}: column '{column}' is empty")
        if label_name(value) not in names:
            raise DataError(f"{place}: {column} '{label_name(value)}' is not one of the choice labels "
                            f"({', '.join(names)})")
        return names.index(label_name(value))

    def questions(self, raw: Dataset, labelled: bool = True, source: str = "data") -> list[Question]:
        """Every row of a split as a ``Question`` (with its gold answer when ``labelled``)."""
        layout = self._layout(raw, source)
        columns = raw.column_names
        if layout == CHOICE_LIST:
            columns_read = [CHOICES, CHOICE_NAMES]
        elif layout == CHOICE_COLUMNS:
            columns_read = choice_columns(columns)
        else:
            columns_read = []
        label_column = self._label_column(columns, layout) if labelled else None
        read = [*self._needed_columns(columns, layout, labelled), *columns_read]
        return [self._question(row, layout, label_column, source) for row in iter_rows(raw, read)]

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        self.tokenizer = tokenizer
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        layout = self._layout(raw, source)
        hints = {self.settings.text_column: "--text-column", self.settings.label_column: "--label-column",
                 **({self.context_column: "-o context_column="} if self.context_column else {})}
        require_columns(raw, self._needed_columns(raw.column_names, layout, split != "predict"), source, hints)
        self.questions(raw, labelled=split != "predict", source=source)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        """``AutoModelForMultipleChoice`` of the encoder's architecture with this task's forward
        (``score_real_choices_only``) on the instance: it stays an instance of its transformers
        class, which saves and loads as such; a saved model is rebuilt through here, so it gets
        the same forward."""
        config = encoder.config
        if not has_transformers_head(AutoModelForMultipleChoice, config):
            raise TaskError(f"{self.name}: transformers has no multiple-choice head for the encoder's architecture "
                            f"({getattr(config, 'model_type', type(config).__name__)}); use an encoder of another "
                            f"one (BERT, RoBERTa, DeBERTa-v2, ELECTRA...)")
        model = transformers_model(AutoModelForMultipleChoice, encoder)
        self.head_modules = head_module_names(model)
        model.forward = types.MethodType(score_real_choices_only, model)
        return model

    # -- features ------------------------------------------------------------------------------
    def _encode_pairs(self, questions: list[str], choices: list[str]) -> dict[str, list[list[int]]]:
        """Tokenize (question, choice) pairs, cutting the question when a pair is too long; a pair
        whose choice would not fit beside one question token is cut longest-first instead."""
        limit = self.settings.max_length
        special = self.tokenizer.num_special_tokens_to_add(pair=True)
        choice_lengths = [len(ids) for ids in self.tokenizer(choices, add_special_tokens=False)["input_ids"]]
        fits = [length + special < limit for length in choice_lengths]
        encoded: dict[str, list[Any]] = {}
        for strategy, group in (("only_first", True), ("longest_first", False)):
            members = [i for i, fit in enumerate(fits) if fit == group]
            if not members:
                continue
            part = self.tokenizer([questions[i] for i in members], [choices[i] for i in members],
                                  truncation=strategy, max_length=limit)
            for key in MODEL_INPUTS:
                if key in part:
                    column = encoded.setdefault(key, [None] * len(choices))
                    for i, ids in zip(members, part[key]):
                        column[i] = ids
        return encoded

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """One feature per question: its ``input_ids`` (and mask, token types) a list of one token
        list per choice; ``labels`` the index of the right choice."""
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        layout = layout_of(batch, batch.get(self.settings.text_column, []))
        labelled = split != "predict"
        label_column = self._label_column(batch, layout) if labelled else None
        questions = [self._question(row, layout, label_column, "data") for row in rows]
        encoded = self._encode_pairs([q.text for q in questions for _ in q.choices],
                                     [choice for q in questions for choice in q.choices])
        out: dict[str, list] = {key: [] for key in encoded}
        start = 0
        for question in questions:
            for key, values in encoded.items():
                out[key].append(values[start:start + len(question.choices)])
            start += len(question.choices)
        out["example_index"] = batch[ROW_INDEX]
        if labelled:
            out["labels"] = [q.answer for q in questions]
        return out

    def feature_lengths(self, features: Dataset) -> list[int]:
        """Each question's longest (question, choice) sequence: what its padded width will be."""
        return [max(len(ids) for ids in choices) for choices in column_values(features, "input_ids")]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """(batch, most choices, longest sequence) tensors, padded on the tokenizer's side;
        ``choice_mask`` marks the real choices."""
        assert self.tokenizer is not None, "setup() or load_state() first"
        counts = [len(f["input_ids"]) for f in features]
        most = max(counts)
        width = max(len(ids) for f in features for ids in f["input_ids"])
        fills = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0,
                 "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch: dict[str, Any] = {}
        for key, fill in fills.items():
            if key not in features[0]:
                continue
            rows = [row[::-1] if left else row for f in features for row in f[key] + [[]] * (most - len(f[key]))]
            tensor = padded(rows, fill, width)
            batch[key] = (tensor.flip(-1) if left else tensor).view(len(features), most, width)
        batch["choice_mask"] = torch.arange(most).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Rows in the list layout from ``{"question": ..., "choices": [...]}`` dicts, (question,
        [choices]) pairs, and dicts in either file layout; each numbered (``item N`` in errors)."""
        text_column = self.settings.text_column
        rows = []
        for number, item in enumerate(inputs, start=1):
            if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], (list, tuple)):
                row = {text_column: item[0], CHOICES: list(item[1]), CHOICE_NAMES: None}
            elif isinstance(item, dict):
                row = self._listed_row(item)
            else:
                raise TaskError(f"{self.name} predicts from (question, [choices]) pairs or dicts, not {item!r:.60}")
            if self.context_column:
                row[self.context_column] = item.get(self.context_column) if isinstance(item, dict) else None
            rows.append({**row, ITEM_COLUMN: number})
        return rows

    def _listed_row(self, item: dict[str, Any]) -> dict[str, Any]:
        """A dict in any layout as a list-layout row (what it lacks left for ``validate`` to name)."""
        question = item.get(self.settings.text_column)
        if isinstance(question, dict):  # CommonsenseQA
            listed = question.get("choices")
            listed = listed if isinstance(listed, list) else []
            choices = [c.get("text") if isinstance(c, dict) else c for c in listed]
            names = [c.get("label") if isinstance(c, dict) else None for c in listed]
            named = names and not any(is_blank(name) for name in names)
            return {self.settings.text_column: question.get("stem"), CHOICES: choices or None,
                    CHOICE_NAMES: [label_name(name) for name in names] if named else None}
        if CHOICES in item:
            return {self.settings.text_column: question, CHOICES: item[CHOICES], CHOICE_NAMES: item.get(CHOICE_NAMES)}
        values = [item.get(column) for column in choice_columns(item)]
        while values and is_blank(values[-1]):
            values.pop()
        return {self.settings.text_column: question, CHOICES: values or None, CHOICE_NAMES: None}

    # -- outputs -------------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """The chosen answer of each question and the probability of every choice. Only each
        question's own choices are read (a batch gathered across processes pads the choice axis)."""
        questions = self.questions(raw, labelled=False)
        example_of = np.asarray(column_values(features, "example_index"))
        probabilities: list[np.ndarray | None] = [None] * len(raw)
        for indices, arrays in outputs:
            for feature, logits in zip(indices, arrays["logits"]):
                example = int(example_of[feature])
                scores = logits[:len(questions[example].choices)].astype(np.float64)
                shifted = np.exp(scores - scores.max())
                probabilities[example] = shifted / shifted.sum()
        predictions = []
        for question, probability in zip(questions, probabilities):
            best = int(np.argmax(probability))
            prediction = {"choice": best, "answer": question.choices[best]}
            if question.names:
                prediction["label"] = question.names[best]
            prediction["scores"] = [float(p) for p in probability]
            predictions.append(prediction)
        return predictions

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        """Accuracy; and the accuracy of guessing, the mean of 1 / the number of choices."""
        questions = self.questions(raw)
        correct = [p["choice"] == q.answer for p, q in zip(predictions, questions)]
        return {"accuracy": float(np.mean(correct)),
                "chance_accuracy": float(np.mean([1 / len(q.choices) for q in questions])),
                "num_examples": len(questions)}

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The metrics; accuracy with its interval; accuracy by where the right answer is (and how
        often the model picks each place) and by the number of choices; the errors the model was
        most sure of."""
        questions = self.questions(raw)
        correct = [p["choice"] == q.answer for p, q in zip(predictions, questions)]
        main = [[key, metrics[key]] for key in ("accuracy", "chance_accuracy", "loss", "num_examples")
                if key in metrics]
        sections = [self._by_position(predictions, questions, correct)]
        if len({len(q.choices) for q in questions}) > 1:
            sections.append(self._by_count(questions, correct))
        sections.append(self._confident_errors(predictions, raw, questions, correct))
        return ReportContent(summary=[table("Metrics", ["metric", "value"], main)],
                             headline=[("accuracy", "accuracy")], bootstrap=[mean_of("accuracy", correct)],
                             resampling_unit="question", sections=sections)

    @staticmethod
    def _by_position(predictions: list[dict[str, Any]], questions: list[Question], correct: list[bool]) -> Section:
        places = sorted({(q.answer, q.name_of(q.answer)) for q in questions} |
                        {(p["choice"], q.name_of(p["choice"])) for p, q in zip(predictions, questions)})
        gold = Counter((q.answer, q.name_of(q.answer)) for q in questions)
        right = Counter((q.answer, q.name_of(q.answer)) for q, ok in zip(questions, correct) if ok)
        chosen = Counter((p["choice"], q.name_of(p["choice"])) for p, q in zip(predictions, questions))
        total = len(questions)
        names = [name for _, name in places]
        rows = [[name, gold[place], right[place] / gold[place] if gold[place] else None, gold[place] / total,
                 chosen[place] / total] for place, name in zip(places, names)]
        chart = bar_chart("Accuracy by position of the right answer", names, {
            "accuracy": [row[2] or 0.0 for row in rows], "share of right answers": [row[3] for row in rows],
            "share of predictions": [row[4] for row in rows]})
        return Section("By position of the right answer", [
            chart, table("By position of the right answer", ["position", "questions", "accuracy",
                                                             "share of right answers", "share of predictions"], rows)],
            note="A model that favours a position picks it more often than it holds the right answer.")

    @staticmethod
    def _by_count(questions: list[Question], correct: list[bool]) -> Section:
        counts = sorted({len(q.choices) for q in questions})
        rows = []
        for count in counts:
            members = [ok for q, ok in zip(questions, correct) if len(q.choices) == count]
            rows.append([count, len(members), sum(members) / len(members), 1 / count])
        chart = bar_chart("Accuracy by number of choices", [str(c) for c in counts],
                          {"accuracy": [row[2] for row in rows], "chance": [row[3] for row in rows]})
        return Section("By number of choices", [
            chart, table("By number of choices", ["choices", "questions", "accuracy", "chance"], rows)])

    def _confident_errors(self, predictions: list[dict[str, Any]], raw: Dataset, questions: list[Question],
                          correct: list[bool]) -> Section:
        def confidence(i: int) -> float:
            return predictions[i]["scores"][predictions[i]["choice"]]

        wrong = sorted((i for i, ok in enumerate(correct) if not ok), key=lambda i: (-confidence(i), i))
        place, places = row_places(raw)
        rows = []
        for i in wrong[:MAX_EXAMPLES]:
            question, chosen = questions[i], predictions[i]["choice"]
            rows.append([places[i], question.text,
                         f"{question.name_of(chosen)}: {question.choices[chosen]}", confidence(i),
                         f"{question.name_of(question.answer)}: {question.choices[question.answer]}",
                         predictions[i]["scores"][question.answer]])
        note = (f"{len(wrong)} of {len(questions)} questions are answered wrongly; these are the {len(rows)} the "
                f"model was surest of.")
        return Section("Most confident errors", [table(
            "Most confident errors", [place, "question", "chosen", "probability", "right answer",
                                      "its probability"], rows)], note=note)

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """How often the right answer is at each position (by its label, e.g. A-E, or its index)."""
        questions = self.questions(raw)
        counts = Counter((q.answer, q.name_of(q.answer)) for q in questions)
        return {name: counts[(index, name)] for index, name in sorted(counts)}
