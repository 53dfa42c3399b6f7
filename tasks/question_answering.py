"""``question-answering``: extractive QA, SQuAD v1.1 and v2.0.

The question and the context are one sequence, ``[CLS] question [SEP] context [SEP]``; a context
too long for ``max_length`` is cut into overlapping windows (``doc_stride`` tokens shared). A
linear layer gives every token a start and an end score; an answer is the best span of context
tokens over all the windows of a question, mapped back to character offsets, so it is always an
exact substring of the context.

The linear layer is, by default (``head=transformers``), the architecture's own transformers
head (``qa_outputs`` of ``AutoModelForQuestionAnswering``, e.g. ``BertForQuestionAnswering``):
the output directory loads with ``AutoModelForQuestionAnswering.from_pretrained``, and
transformers' question-answering pipeline gives the same answers where a question has one
window. ``head=finetune-kit`` is the earlier head (``SpanExtractor``, the same linear layer, with
padding kept out of the loss); models saved before the option existed load with it. For SQuAD v2.0 the [CLS] position stands for "no answer": a
question gets no answer when ``null score - best span score > threshold``, and the threshold is
tuned on the validation set after training and saved with the model. Exact match and F1 follow
the official evaluation script of the data's SQuAD version (see ``_rules``).

The options (``-o key=value``) are declared in ``QuestionAnsweringTask.task_options``
(``finetune-kit tasks question-answering`` lists them); ``doc_stride`` and ``max_query_length``
default to BERT's SQuAD settings (128 and 64 at max_length 384), scaled to other lengths.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForQuestionAnswering
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from finetune_kit.alignment import char_span_to_tokens
from finetune_kit.batching import MODEL_INPUTS, InputPadder
from finetune_kit.columns import column_values
from finetune_kit.data import SQUAD_VERSION_COLUMN, iter_rows, require_columns, where
from finetune_kit.files import atomic_write_text
from finetune_kit.heads import head_module_names, transformers_model
from finetune_kit.metrics import (
    answer_scores,
    gold_answers,
    normalize_answer,
    null_threshold_curve,
    squad_metrics,
    squad_rules_of,
    tune_null_threshold,
)
from finetune_kit.report_content import (
    MAX_EXAMPLES,
    Block,
    ReportContent,
    Section,
    bar_chart,
    curve,
    marked,
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
)

QUESTION_WORDS = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how")
LENGTH_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"), (11, 10**9, "11+"))
CONTEXT_CHARS = 150  # context shown on each side of the answers of a wrong-answer example
CURVE_POINTS = 400  # most points of the no-answer threshold curve kept in the report
# The span heads (``-o head=``): the architecture's own transformers head, or finetune-kit's.
TRANSFORMERS_HEAD, OWN_HEAD = "transformers", "finetune-kit"


class SpanExtractor(nn.Module):
    """Encoder + a linear layer giving each token a start and an end score (``head=finetune-kit``;
    the transformers head is the same layer, without the padding masked)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        nn.init.normal_(self.qa_outputs.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(
        self, start_positions: torch.Tensor | None = None, end_positions: torch.Tensor | None = None,
        **inputs: torch.Tensor,
    ) -> QuestionAnsweringModelOutput:
        hidden = self.encoder(**inputs).last_hidden_state
        start_logits, end_logits = self.qa_outputs(hidden).float().unbind(dim=-1)
        padding = inputs["attention_mask"] == 0
        start_logits = start_logits.masked_fill(padding, -1e4)
        end_logits = end_logits.masked_fill(padding, -1e4)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (nn.functional.cross_entropy(start_logits, start_positions)
                    + nn.functional.cross_entropy(end_logits, end_positions)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits)


def answer_matches(context: str, text: str, start: int) -> bool:
    return bool(text.strip()) and 0 <= start and context[start : start + len(text)] == text


class QuestionAnsweringTask(TaskBase):
    name: ClassVar[str] = "question-answering"
    description: ClassVar[str] = ("Extractive QA (SQuAD v1.1/v2.0): answer spans over windowed contexts, "
                                  "n-best search, tuned no-answer threshold")
    pipeline_tag: ClassVar[str | None] = "question-answering"
    default_columns: ClassVar[dict[str, str]] = {"text_column": "question", "text_pair_column": "context",
                                                 "label_column": "answers"}
    default_file_format: ClassVar[str] = "json"
    default_max_length: ClassVar[int] = 384
    default_metric: ClassVar[str] = "f1"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("head", TRANSFORMERS_HEAD, "the span head: the architecture's own transformers head (saved as what "
                   "AutoModelForQuestionAnswering loads) or finetune-kit's earlier one", kind="choice",
                   choices=(TRANSFORMERS_HEAD, OWN_HEAD)),
        TaskOption("doc_stride", None, "context tokens two consecutive windows share (null: a third of max_length)",
                   kind="int", minimum=0, optional=True),
        TaskOption("max_answer_length", 30, "the longest answer, in tokens", kind="int", minimum=1),
        TaskOption("n_best", 20, "start and end candidates per window, and answers kept per question",
                   kind="int", minimum=1),
        TaskOption("max_query_length", None, "questions are cut to this many tokens (null: a sixth of max_length)",
                   kind="int", minimum=1, optional=True),
        TaskOption("with_negatives", "auto", "whether questions may have no answer (SQuAD v2.0); auto: when the "
                   "training data has such questions", kind="choice", choices=("auto", True, False)),
        TaskOption("skip_bad_answers", False, "leave out (and count) an answer that does not match its context at "
                   "answer_start, instead of stopping", kind="flag"),
        TaskOption("no_answer_threshold", None, "use this no-answer threshold instead of tuning one (null: tune)",
                   kind="number", optional=True),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = options = self.read_options()
        # BERT's SQuAD settings (384 / 128 / 64), scaled to other lengths (max_length >= 8: both >= 1)
        if options["doc_stride"] is None:
            options["doc_stride"] = settings.max_length // 3
        if options["max_query_length"] is None:
            options["max_query_length"] = settings.max_length // 6
        fixed = options["no_answer_threshold"]
        self.with_negatives = False
        self.threshold = float(fixed) if fixed is not None else 0.0
        self.skipped_answers: dict[str, int] = {}  # file -> answers left out (skip_bad_answers)
        self.tokenizer: Any = None
        self.head: str = options["head"]
        self.head_modules: tuple[str, ...] = ("qa_outputs",)  # the linear layer, in both heads

    # -- columns and answers -----------------------------------------------------------------
    @property
    def _columns(self) -> tuple[str, str, str]:
        s = self.settings
        return s.text_column, s.text_pair_column, s.label_column

    def _column_hints(self) -> dict[str, str]:
        question, context, answers = self._columns
        return {question: "--text-column", context: "--text-pair-column", answers: "--label-column"}

    @staticmethod
    def _where(source: str, row: dict[str, Any]) -> str:
        location = where(source, row)
        return f"{location} (question {row['id']})" if row.get("id") is not None else location

    def _good_answers(self, row: dict[str, Any]) -> list[tuple[str, int]]:
        """The (text, start) answers of a row that match its context (all of them, unless
        ``skip_bad_answers`` let some bad ones through validation)."""
        answers = row[self._columns[2]] or {"text": [], "answer_start": []}
        context = row[self._columns[1]]
        return [(t, s) for t, s in zip(answers["text"], answers["answer_start"]) if answer_matches(context, t, s)]

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])
        if self.options["with_negatives"] == "auto":
            self.with_negatives = any(not answers["text"] for answers in column_values(raw["train"], self._columns[2]))
        else:
            self.with_negatives = bool(self.options["with_negatives"])

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        question, context, answers = self._columns
        labelled = split != "predict"
        require_columns(raw, [question, context] + ([answers] if labelled else []), source, self._column_hints())
        seen: dict[str, str] = {}
        skipped = 0
        stated_v1 = self._stated_rules(raw) == "v1.1"
        for row in iter_rows(raw, ["id", question, context, *([answers] if labelled else [])]):
            here = self._where(source, row)
            for column in (question, context):
                if not isinstance(row[column], str) or not row[column].strip():
                    raise DataError(f"{here}: column '{column}' is empty or not text")
            if row.get("id") is not None:
                if str(row["id"]) in seen:
                    raise DataError(f"{here}: question id '{row['id']}' appears twice (first: {seen[str(row['id'])]})")
                seen[str(row["id"])] = here
            if not labelled:
                continue
            gold = row[answers]
            if not isinstance(gold, dict) or not isinstance(gold.get("text"), list) \
                    or not isinstance(gold.get("answer_start"), list) or len(gold["text"]) != len(gold["answer_start"]):
                raise DataError(f"{here}: column '{answers}' must be {{\"text\": [...], \"answer_start\": [...]}} "
                                f"with one start per text")
            if stated_v1 and not gold["text"]:
                raise DataError(f"{here}: no answer, but the file states SQuAD version 1.1, where every question "
                                f"has one; give its answers, or state \"version\": \"v2.0\" if questions may have none")
            for text, start in zip(gold["text"], gold["answer_start"]):
                if answer_matches(row[context], text, start):
                    continue
                if self.options["skip_bad_answers"]:
                    skipped += 1
                    continue
                found = row[context][start : start + len(text)] if isinstance(start, int) else ""
                raise DataError(f"{here}: answer {text!r} does not match the context at {start} "
                                f"(the context has {found!r} there); fix it or pass -o skip_bad_answers=true")
        if skipped:
            self.skipped_answers[source] = skipped

    def _set_tokenizer(self, tokenizer: Any) -> None:
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        window = self.settings.max_length - self.options["max_query_length"] - specials
        if self.options["doc_stride"] >= window:
            raise TaskError(f"task_options.doc_stride: {self.options['doc_stride']} is not allowed; it must be "
                            f"smaller than the context room of a window ({window} tokens: max_length "
                            f"{self.settings.max_length} minus max_query_length {self.options['max_query_length']} "
                            f"minus {specials} special tokens)")
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer, extra=("start_positions", "end_positions"))
        self._cls_id = tokenizer.cls_token_id

    def state(self) -> dict[str, Any]:
        return {"with_negatives": self.with_negatives, "no_answer_threshold": self.threshold,
                "skipped_answers": self.skipped_answers, "head": self.head}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.with_negatives = bool(state["with_negatives"])
        fixed = self.options["no_answer_threshold"]
        self.threshold = float(fixed) if fixed is not None else float(state["no_answer_threshold"])
        self.skipped_answers = dict(state.get("skipped_answers") or {})
        self.head = state.get("head", OWN_HEAD)  # a model saved before the option had finetune-kit's
        self._set_tokenizer(tokenizer)

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        if self.head == OWN_HEAD:
            return SpanExtractor(encoder)
        model = transformers_model(AutoModelForQuestionAnswering, encoder)
        self.head_modules = head_module_names(model)
        return model

    # -- features ----------------------------------------------------------------------------
    def _cut_questions(self, questions: list[str]) -> list[str]:
        """Questions without leading space, cut to ``max_query_length`` tokens."""
        questions = [q.lstrip() for q in questions]
        limit = self.options["max_query_length"]
        encoded = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        return [q if len(offsets) <= limit else q[: offsets[limit - 1][1]]
                for q, offsets in zip(questions, encoded["offset_mapping"])]

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """One feature per window: ids, which tokens are context and their character offsets,
        where [CLS] is, and (with answers) the answer's token span or [CLS] when the answer is
        not wholly inside the window."""
        question_col, context_col, answers_col = self._columns
        encoded = self.tokenizer(
            self._cut_questions(batch[question_col]), batch[context_col], truncation="only_second",
            max_length=self.settings.max_length, stride=self.options["doc_stride"],
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        labelled = split != "predict"
        out: dict[str, list] = {k: [] for k in (*MODEL_INPUTS, "example_index", "offsets", "cls_index")
                                if k in encoded or k not in MODEL_INPUTS}
        if labelled:
            out["start_positions"], out["end_positions"] = [], []
        for f, k in enumerate(encoded["overflow_to_sample_mapping"]):
            if labelled:
                good = self._good_answers({context_col: batch[context_col][k], answers_col: batch[answers_col][k]})
                if split == "train" and not good and batch[answers_col][k]["text"]:
                    continue  # its answers were all skipped (skip_bad_answers): not a no-answer question
            in_context = [s == 1 for s in encoded.sequence_ids(f)]
            offsets = [tuple(o) if inside else (-1, -1) for o, inside in zip(encoded["offset_mapping"][f], in_context)]
            ids = encoded["input_ids"][f]
            cls_index = ids.index(self._cls_id) if self._cls_id in ids else 0
            for key in MODEL_INPUTS:
                if key in encoded:
                    out[key].append(encoded[key][f])
            out["example_index"].append(batch[ROW_INDEX][k])
            out["offsets"].append([list(o) for o in offsets])
            out["cls_index"].append(cls_index)
            if labelled:
                span = None
                if good:
                    text, start = good[0]
                    span = char_span_to_tokens(offsets, in_context, start, start + len(text))
                out["start_positions"].append(span[0] if span else cls_index)
                out["end_positions"].append(span[1] if span else cls_index)
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collator(features)

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Dicts with a question and a context (and optionally an id), or (question, context) pairs."""
        question_col, context_col, _ = self._columns
        rows = []
        for i, item in enumerate(inputs):
            if isinstance(item, dict):
                row = dict(item)
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                row = {question_col: item[0], context_col: item[1]}
            else:
                raise TaskError(f"{self.name} predicts from {{'question': ..., 'context': ...}} dicts or "
                                f"(question, context) pairs, not {item!r:.60}")
            row.setdefault("id", str(i))
            rows.append(row)
        return rows

    # -- outputs -----------------------------------------------------------------------------
    def _window_candidates(self, start_logits: np.ndarray, end_logits: np.ndarray,
                           offsets: list[list[int]]) -> list[tuple[float, int, int]]:
        """(score, first char, end char) of the best spans of context tokens in one window."""
        context = np.array([o[0] >= 0 for o in offsets])
        n = len(offsets)
        starts = np.where(context, start_logits[:n], -np.inf)
        ends = np.where(context, end_logits[:n], -np.inf)
        n_best = self.options["n_best"]
        top_starts = np.argsort(-starts)[:n_best]
        top_ends = np.argsort(-ends)[:n_best]
        candidates = []
        for i in top_starts:
            if not context[i]:
                continue
            for j in top_ends:
                if context[j] and i <= j < i + self.options["max_answer_length"]:
                    candidates.append((float(starts[i] + ends[j]), offsets[i][0], offsets[j][1]))
        return heapq.nlargest(n_best, candidates)

    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """Stream the windows' scores into per-question n-best lists; a question is decided as soon
        as all its windows are in, so no more than a few questions' candidates are ever held."""
        contexts = column_values(raw, self._columns[1])
        ids = column_values(raw, "id") if "id" in raw.column_names else None
        example_of = np.asarray(column_values(features, "example_index"))
        pending = np.bincount(example_of, minlength=len(raw))
        windows = features.select_columns(["offsets", "cls_index"])
        candidates: dict[int, list[tuple[float, int, int]]] = {}
        null_scores: dict[int, float] = {}
        results: list[dict[str, Any] | None] = [None] * len(raw)
        for indices, arrays in outputs:
            rows = windows[indices.tolist()]
            for r, feature in enumerate(indices.tolist()):
                example = int(example_of[feature])
                start_logits, end_logits = arrays["start_logits"][r], arrays["end_logits"][r]
                found = self._window_candidates(start_logits, end_logits, rows["offsets"][r])
                candidates[example] = heapq.nlargest(self.options["n_best"], candidates.get(example, []) + found)
                cls = rows["cls_index"][r]
                null = float(start_logits[cls] + end_logits[cls])
                null_scores[example] = min(null, null_scores.get(example, np.inf))
                pending[example] -= 1
                if pending[example] == 0:
                    question_id = str(ids[example]) if ids is not None else str(example)
                    results[example] = self._decide(question_id, contexts[example], candidates.pop(example),
                                                    null_scores.pop(example))
        return results  # type: ignore[return-value]

    def _decide(self, question_id: str, context: str, found: list[tuple[float, int, int]],
                null_score: float) -> dict[str, Any]:
        """The answer (or none) from a question's candidates, and its n-best list with
        probabilities (a softmax over the candidates, and the null answer for v2.0)."""
        unique: dict[tuple[int, int], float] = {}
        for score, start, end in found:
            unique[(start, end)] = max(score, unique.get((start, end), -np.inf))
        ranked = sorted(unique.items(), key=lambda item: -item[1])
        scores = np.array([s for _, s in ranked] + ([null_score] if self.with_negatives else []), dtype=np.float64)
        probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if len(scores) else scores
        nbest = [{"text": context[s:e], "start": s, "end": e, "score": score, "probability": float(p)}
                 for ((s, e), score), p in zip(ranked, probabilities)]
        if self.with_negatives:
            nbest.append({"text": "", "start": -1, "end": -1, "score": null_score,
                          "probability": float(probabilities[-1])})
            nbest.sort(key=lambda c: -c["score"])
        best = next((c for c in nbest if c["start"] >= 0), None)
        best_text = best["text"] if best else ""
        prediction: dict[str, Any] = {"id": question_id, "answer": best_text, "score": best["score"] if best else None,
                                      "start": best["start"] if best else -1, "end": best["end"] if best else -1}
        if self.with_negatives:
            diff = null_score - best["score"] if best else float("inf")
            prediction["null_score_diff"] = diff
            if diff > self.threshold:
                prediction.update(answer="", start=-1, end=-1)
            prediction["best_span"] = best_text
        prediction["nbest"] = nbest
        return prediction

    def _answer_at(self, prediction: dict[str, Any], threshold: float) -> str:
        if not self.with_negatives:
            return prediction["answer"]
        return "" if prediction["null_score_diff"] > threshold else prediction["best_span"]

    def _golds(self, raw: Dataset) -> list[list[str]]:
        return [list(answers["text"]) for answers in column_values(raw, self._columns[2])]

    @staticmethod
    def _stated_rules(raw: Dataset) -> str | None:
        """The scoring rules of the SQuAD version a split's file states (None: it states none)."""
        if SQUAD_VERSION_COLUMN not in raw.column_names or len(raw) == 0:
            return None
        return squad_rules_of(raw[0][SQUAD_VERSION_COLUMN])

    def _rules(self, raw: Dataset, golds: list[list[str]]) -> str:
        """The official SQuAD rules a split is scored by ("v1.1" or "v2.0"): those of the version
        its file states, else v2.0 when questions may have no answer (the model was trained with
        such questions, or this split has some), else v1.1."""
        stated = self._stated_rules(raw)
        if stated is not None:
            return stated
        return "v2.0" if self.with_negatives or any(not g for g in golds) else "v1.1"

    def _best_threshold(self, predictions: list[dict[str, Any]], golds: list[list[str]],
                        rules: str) -> tuple[float, float]:
        """The no-answer threshold that maximises F1 on these predictions, and that F1."""
        span_f1 = [answer_scores(p["best_span"], g, rules)[1] for p, g in zip(predictions, golds)]
        null_f1 = [answer_scores("", g, rules)[1] for g in golds]
        return tune_null_threshold([p["null_score_diff"] for p in predictions], span_f1, null_f1)

    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> bool:
        """Tune the no-answer threshold on the validation predictions (SQuAD v2.0 only)."""
        if not self.with_negatives or self.options["no_answer_threshold"] is not None:
            return False
        golds = self._golds(raw)
        self.threshold, _ = self._best_threshold(predictions, golds, self._rules(raw, golds))
        return True

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        golds = self._golds(raw)
        rules = self._rules(raw, golds)
        metrics = squad_metrics([self._answer_at(p, self.threshold) for p in predictions], golds, rules)
        if self.with_negatives:
            metrics["no_answer_threshold"] = self.threshold
            metrics["at_threshold_0"] = squad_metrics([self._answer_at(p, 0.0) for p in predictions], golds, rules)
            # the official script's best_f1: the F1 this split would give at its own best threshold
            metrics["best_f1_threshold"], metrics["best_f1"] = self._best_threshold(predictions, golds, rules)
        bad = sum(len(g) for g in golds) - sum(
            len(self._good_answers(row)) for row in iter_rows(raw, self._columns))
        if bad:
            metrics["answers_not_matching_context"] = bad
        return metrics

    def _summary(self, metrics: dict[str, Any]) -> list[Block]:
        """EM and F1 (for v2.0 at the threshold 0 and at the saved one, HasAns and NoAns too),
        with the question counts, the scoring rules and skipped answers as a note."""
        def figures(m: dict[str, Any]) -> list[Any]:
            return [m["exact_match"], m["f1"], *[m.get(f"{g}_{k}", "") for g in ("HasAns", "NoAns")
                                                 for k in ("exact_match", "f1")]]

        if "at_threshold_0" not in metrics:
            rows = [["exact match", metrics["exact_match"]], ["F1", metrics["f1"]],
                    ["questions", metrics["num_questions"]]]
            rows += [[k.replace("_", " "), metrics[k]] for k in ("loss",) if k in metrics]
            notes = self._rules_notes(metrics) + self._skipped_notes(metrics)
            return [table("Metrics", ["metric", "value"], rows, note=" ".join(notes) or None)]
        header = ["no-answer threshold", "EM", "F1", "HasAns EM", "HasAns F1", "NoAns EM", "NoAns F1"]
        rows = [[0.0, *figures(metrics["at_threshold_0"])],
                [f"{metrics['no_answer_threshold']:.4f} (tuned on validation, saved)", *figures(metrics)]]
        notes = [f"Questions: {metrics['num_questions']} ({metrics.get('HasAns_total', 0)} answerable, "
                 f"{metrics.get('NoAns_total', 0)} unanswerable). The best threshold on this split alone would be "
                 f"{metrics['best_f1_threshold']:.4f} (F1 {metrics['best_f1']:.4f})."]
        if "loss" in metrics:
            notes.append(f"Loss: {metrics['loss']:.4f}.")
        notes += self._rules_notes(metrics) + self._skipped_notes(metrics)
        return [table("EM and F1 by no-answer threshold", header, rows, note=" ".join(notes))]

    @staticmethod
    def _rules_notes(metrics: dict[str, Any]) -> list[str]:
        rules = metrics.get("squad_rules")
        return [f"Scored by the official SQuAD {rules} rules."] if rules else []

    def _skipped_notes(self, metrics: dict[str, Any]) -> list[str]:
        notes = []
        if "answers_not_matching_context" in metrics:
            notes.append(f"Gold answers here not matching their context: {metrics['answers_not_matching_context']}.")
        if self.skipped_answers:
            notes.append("Answers left out of training and evaluation files (skip_bad_answers): "
                         + ", ".join(f"{source}: {n}" for source, n in self.skipped_answers.items()) + ".")
        return notes

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The summary, question-level bootstrap statistics (EM, F1, HasAns/NoAns), F1 by answer
        length and by question word, the no-answer threshold curve (v2.0), and wrong answers
        beside the gold ones in their context."""
        golds = self._golds(raw)
        rules = self._rules(raw, golds)
        answers = [self._answer_at(p, self.threshold) for p in predictions]
        scores = [answer_scores(a, g, rules) for a, g in zip(answers, golds)]
        em, f1 = [s[0] for s in scores], [s[1] for s in scores]
        statistics = [mean_of("exact_match", em), mean_of("f1", f1)]
        headline = [("exact match", "exact_match"), ("F1", "f1")]
        if "HasAns_total" in metrics:
            has = [gold_answers(g) != [""] for g in golds]
            for name, mask in (("HasAns", has), ("NoAns", [not h for h in has])):
                statistics += [mean_of(f"{name}_exact_match", em, mask), mean_of(f"{name}_f1", f1, mask)]
                headline += [(f"{name} exact match", f"{name}_exact_match"), (f"{name} F1", f"{name}_f1")]
        questions = column_values(raw, self._columns[0])
        length_of = [self._answer_length_bucket(g) for g in golds]
        word_of = [question_word(q) for q in questions]
        sections = [self._breakdown("F1 by answer length", "gold answer length (words)", length_of, em, f1,
                                    [b for *_, b in LENGTH_BUCKETS] + ["no answer"]),
                    self._breakdown("F1 by question word", "question word", word_of, em, f1,
                                    ["what", "which", "who", "when", "where", "why", "how", "other"])]
        if self.with_negatives:
            sections.append(self._threshold_section(predictions, golds, rules))
        sections.append(self._wrong_answers(predictions, raw, answers, f1))
        return ReportContent(summary=self._summary(metrics), headline=headline, bootstrap=statistics,
                             resampling_unit="question", sections=sections)

    @staticmethod
    def _answer_length_bucket(golds: list[str]) -> str:
        """The bucket of the first gold answer's length in normalised words ("no answer" for none)."""
        kept = gold_answers(golds)
        if kept == [""]:
            return "no answer"
        words = len(normalize_answer(kept[0]).split())
        return next(name for low, high, name in LENGTH_BUCKETS if low <= words <= high)

    @staticmethod
    def _breakdown(title: str, what: str, groups: list[str], em: list[float], f1: list[float],
                   order: list[str]) -> Section:
        names = [name for name in order if name in groups]
        rows = []
        for name in names:
            members = [i for i, g in enumerate(groups) if g == name]
            rows.append([name, len(members), float(np.mean([em[i] for i in members])),
                         float(np.mean([f1[i] for i in members]))])
        return Section(title, [table(title, [what, "questions", "EM", "F1"], rows),
                               bar_chart(title, names, {"EM": [r[2] for r in rows], "F1": [r[3] for r in rows]})])

    def _threshold_section(self, predictions: list[dict[str, Any]], golds: list[list[str]],
                           rules: str) -> Section:
        """Mean F1 against the no-answer threshold on this split, the saved threshold marked."""
        span_f1 = [answer_scores(p["best_span"], g, rules)[1] for p, g in zip(predictions, golds)]
        null_f1 = [answer_scores("", g, rules)[1] for g in golds]
        diffs = [p["null_score_diff"] for p in predictions]
        finite = [d for d in diffs if np.isfinite(d)]
        clipped = [d if np.isfinite(d) else (max(finite) + 1 if finite else 0.0) for d in diffs]
        thresholds, f1s = null_threshold_curve(clipped, span_f1, null_f1)
        if len(thresholds) > CURVE_POINTS:
            keep = sorted(set(np.linspace(0, len(thresholds) - 1, CURVE_POINTS).round().astype(int).tolist())
                          | {int(np.argmax(f1s))})
            thresholds, f1s = [thresholds[k] for k in keep], [f1s[k] for k in keep]
        markers = [(self.threshold, f"saved threshold {self.threshold:.3f}")]
        if self.threshold != 0:
            markers.append((0.0, "0"))
        return Section("No-answer threshold", [
            curve("F1 against the no-answer threshold", "threshold (null score - best span score)", "F1",
                  {"F1": (thresholds, f1s)}, markers, steps=True)],
            note="A question gets no answer when its null score minus its best span score exceeds the threshold; "
                 "F1 changes only where the threshold passes a question's difference (each point stands for the "
                 "thresholds between two differences). The saved threshold was tuned on the validation split.")

    def _wrong_answers(self, predictions: list[dict[str, Any]], raw: Dataset, answers: list[str],
                       f1: list[float]) -> Section:
        """The first questions answered wrongly (F1 below 1), the predicted and the gold answers
        marked in an excerpt of the context."""
        question_col, context_col, answers_col = self._columns
        wrong = [i for i, score in enumerate(f1) if score < 1.0]
        rows = []
        for i in wrong[:MAX_EXAMPLES]:
            row = raw[i]
            gold = row[answers_col] or {"text": [], "answer_start": []}
            marks = [(s, s + len(t), "gold") for t, s in zip(gold["text"], gold["answer_start"])]
            if answers[i]:
                marks.append((predictions[i]["start"], predictions[i]["end"], "predicted"))
            rows.append([predictions[i]["id"], row[question_col], answers[i] or "(no answer)",
                         "; ".join(dict.fromkeys(gold["text"])) or "(no answer)", f1[i],
                         context_excerpt(row[context_col], marks)])
        return Section("Wrong answers", [table("Wrong answers", ["id", "question", "predicted", "gold", "F1", "context"],
                                               rows)],
                       note=f"{len(wrong)} of {len(f1)} questions have F1 below 1; the first {len(rows)} are shown.")

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """Answerable and unanswerable questions in a split, for the model card."""
        has = [gold_answers(g) != [""] for g in self._golds(raw)]
        return {"answerable": sum(has), "unanswerable": len(has) - sum(has)}

    def write_predictions(self, predictions: list[dict[str, Any]], path: Path) -> list[Path]:
        """The official format, ``{question_id: answer}`` ("" for no answer), at ``path``; the
        n-best lists as JSON Lines beside it (``<name>.nbest.jsonl``); and for a model that may
        answer nothing (v2.0), ``<name>.null_odds.json``: ``{question_id: null score - best span
        score}``, the number the no-answer threshold is compared with. The official v2.0 script
        reads it with ``--na-prob-file`` and, given ``--na-prob-thresh`` the saved threshold, makes
        the same no-answer decisions."""
        path = Path(path)
        nbest_path = path.with_name(path.stem + ".nbest.jsonl")
        atomic_write_text(nbest_path, "".join(json.dumps({"id": p["id"], "nbest": p["nbest"]}, ensure_ascii=False)
                                              + "\n" for p in predictions))
        written = [path, nbest_path]
        if self.with_negatives:
            odds_path = path.with_name(path.stem + ".null_odds.json")
            atomic_write_text(odds_path, json.dumps({p["id"]: p["null_score_diff"] for p in predictions},
                                                    ensure_ascii=False, indent=1) + "\n")
            written.append(odds_path)
        atomic_write_text(path, json.dumps({p["id"]: p["answer"] for p in predictions}, ensure_ascii=False, indent=1)
                          + "\n")
        return written


def question_word(question: str) -> str:
    """The first wh-word of a question (whom and whose count as who), else "other"."""
    for word in normalize_answer(question).split():
        if word in QUESTION_WORDS:
            return "who" if word in ("whom", "whose") else word
    return "other"


def context_excerpt(context: str, marks: list[tuple[int, int, str]]) -> dict[str, Any]:
    """The part of the context around the marked spans, with ``...`` where it is cut."""
    if not marks:
        start, end = 0, min(len(context), 2 * CONTEXT_CHARS)
    else:
        start = max(0, min(s for s, _, _ in marks) - CONTEXT_CHARS)
        end = min(len(context), max(e for _, e, _ in marks) + CONTEXT_CHARS)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(context) else ""
    shift = len(prefix) - start
    return marked(prefix + context[start:end] + suffix, [(s + shift, e + shift, label) for s, e, label in marks])
