"""``span-ner``: named entities as classified spans, nested ones included (Jurafsky & Martin 11.3.4).

Every span of at most ``max_span_width`` words is a candidate. Words get vectors from the
encoder (their first subword, or the mean of their subwords); a span (i, j) is represented by
FFNN_start(h_i), FFNN_end(h_j), a self-attentive summary of h_i..h_j (attention weights learned
over the span's words) and a width embedding, and a feed-forward classifier scores it over the
entity types and NULL. Every candidate span is trained with cross-entropy (NULL spans can be
down-weighted or sampled). A span is an entity when its best type's probability beats a
threshold that is tuned on the validation set after training (globally or per type) and saved
with the model. Decoding is ``nested`` (no two kept spans cross; nesting allowed) or ``flat``
(no overlaps). Long sentences are windowed like token classification; each span is predicted
from the window where it has the most context.

Data: JSON Lines ``{"tokens": [...], "spans": [{"start": i, "end": j, "label": "X"}]}`` (word
indices, end exclusive), GENIA's JSON (``{"sentence": [...], "ner": [{"index": [...], "type"}]}``)
or any file token classification reads (BIO tags, turned into spans; the scheme is detected
from the whole training data, and other tagged files must be in it). A gold span given twice in
a sentence is one entity (a warning says how many and where the first is).

The options (``-o key=value``) are declared in ``SpanNerTask.task_options`` (``finetune-kit tasks
span-ner`` lists them).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers.utils import ModelOutput

from finetune_kit.alignment import (
    plan_windows,
    sentence_rows,
    special_tokens_around,
    window_inputs,
    word_pieces,
)
from finetune_kit.batching import InputPadder, padded
from finetune_kit.columns import column_values
from finetune_kit.data import iter_rows, place_of, require_columns, token_place, where, where_token
from finetune_kit.heads import head_dropout
from finetune_kit.metrics import span_metrics
from finetune_kit.entity_errors import entity_error_section
from finetune_kit.report_content import Block, ReportContent, Section, per_label_chart, per_label_table, table
from finetune_kit.stats import micro_prf
from finetune_kit.spans import calibrate_threshold, decode, layout_of, read_spans
from finetune_kit.tagging import MixedSchemesError, describe_tag, detect_scheme, first_foreign_tag, scheme_words
from finetune_kit.task import (
    ROW_INDEX,
    DataError,
    OutputBatch,
    TaskBase,
    TaskError,
    TaskOption,
    TaskSettings,
)

NULL = "NULL"
MIN_PROBABILITY = 0.05  # spans below this are never entities: the lowest threshold tried


def ffnn(dim_in: int, dim_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.ReLU(), nn.Dropout(dropout))


@dataclass
class SpanOutput(ModelOutput):
    loss: torch.Tensor | None = None
    # (batch, words, max width, types + 1): scores of the span starting at each word with each width
    logits: torch.Tensor | None = None


class SpanClassifier(nn.Module):
    """Encoder -> word vectors -> span vectors -> scores over NULL and the entity types."""

    def __init__(self, encoder: nn.Module, num_labels: int, max_width: int, word_pooling: str = "first",
                 ffnn_dim: int = 150, width_dim: int = 20, null_weight: float = 1.0, null_sample: float = 1.0) -> None:
        super().__init__()
        hidden = encoder.config.hidden_size
        dropout = head_dropout(encoder.config)
        self.encoder = encoder
        self.max_width = max_width
        self.word_pooling = word_pooling
        self.null_weight = null_weight
        self.null_sample = null_sample
        self.start_ffnn = ffnn(hidden, ffnn_dim, dropout)
        self.end_ffnn = ffnn(hidden, ffnn_dim, dropout)
        self.span_attention = nn.Linear(hidden, 1)
        self.width_embedding = nn.Embedding(max_width, width_dim)
        self.span_classifier = nn.Sequential(ffnn(2 * ffnn_dim + hidden + width_dim, ffnn_dim, dropout),
                                             nn.Linear(ffnn_dim, num_labels))

    def word_vectors(self, hidden: torch.Tensor, word_positions: torch.Tensor, subword_words: torch.Tensor,
                     num_words: int) -> torch.Tensor:
        """(batch, words, hidden): each word's first subword, or the mean of its subwords."""
        if self.word_pooling == "first":
            index = word_positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.size(-1))
            return hidden.gather(1, index)
        owner = subword_words.clamp(min=0)
        weight = (subword_words >= 0).to(hidden.dtype).unsqueeze(-1)
        sums = hidden.new_zeros(hidden.size(0), num_words, hidden.size(-1))
        sums.scatter_add_(1, owner.unsqueeze(-1).expand(-1, -1, hidden.size(-1)), hidden * weight)
        counts = hidden.new_zeros(hidden.size(0), num_words, 1).scatter_add_(1, owner.unsqueeze(-1), weight)
        return sums / counts.clamp(min=1)

    def attention_summary(self, words: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """The self-attentive summary of each span: sum over its words k of softmax_k(w . h_k) h_k.

        ``words`` (batch, n, hidden); ``starts`` and ``widths`` (batch, spans), width >= 1.
        """
        offsets = torch.arange(self.max_width, device=words.device)
        index = (starts.unsqueeze(-1) + offsets).clamp(max=words.size(1) - 1)  # (batch, spans, max width)
        inside = offsets < widths.unsqueeze(-1)
        scores = self.span_attention(words).squeeze(-1)  # (batch, n)
        span_scores = scores.gather(1, index.flatten(1)).view(index.shape).masked_fill(~inside, float("-inf"))
        weights = torch.softmax(span_scores.float(), dim=-1).to(words.dtype)
        span_words = words.gather(1, index.flatten(1).unsqueeze(-1).expand(-1, -1, words.size(-1)))
        return (weights.unsqueeze(-1) * span_words.view(*index.shape, -1)).sum(2)

    def forward(self, word_positions: torch.Tensor, subword_words: torch.Tensor | None = None,
                span_labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SpanOutput:
        hidden = self.encoder(**inputs).last_hidden_state
        batch, num_words = word_positions.shape
        words = self.word_vectors(hidden, word_positions, subword_words, num_words)
        # every (start word, width) pair of the window grid; pairs past the last word are masked
        starts = torch.arange(num_words, device=words.device).repeat_interleave(self.max_width)
        widths = torch.arange(1, self.max_width + 1, device=words.device).repeat(num_words)
        starts, widths = starts.expand(batch, -1), widths.expand(batch, -1)
        ends = (starts + widths - 1).clamp(max=num_words - 1)
        vectors = torch.cat([
            self.start_ffnn(words.gather(1, starts.unsqueeze(-1).expand(-1, -1, words.size(-1)))),
            self.end_ffnn(words.gather(1, ends.unsqueeze(-1).expand(-1, -1, words.size(-1)))),
            self.attention_summary(words, starts, widths),
            self.width_embedding(widths - 1),
        ], dim=-1)
        logits = self.span_classifier(vectors).view(batch, num_words, self.max_width, -1)
        loss = None
        if span_labels is not None:
            loss = self.span_loss(logits, span_labels)
        return SpanOutput(loss=loss, logits=logits)

    def span_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the candidate spans (label -100: not a candidate), NULL (0) spans
        weighted by ``null_weight`` and, in training, sampled at the rate ``null_sample``."""
        logits, labels = logits.float().flatten(0, 2), labels.flatten()
        weight = torch.ones_like(labels, dtype=logits.dtype)
        is_null = labels == 0
        weight[is_null] = self.null_weight
        if self.training and self.null_sample < 1.0:
            weight[is_null & (torch.rand(labels.shape, device=labels.device) >= self.null_sample)] = 0.0
        valid = labels >= 0
        losses = nn.functional.cross_entropy(logits[valid], labels[valid], reduction="none")
        return (losses * weight[valid]).sum() / weight[valid].sum().clamp(min=1e-6)


class SpanNerTask(TaskBase):
    name: ClassVar[str] = "span-ner"
    description: ClassVar[str] = ("Span-based NER: every span up to a max width classified (types + NULL), "
                                  "nested entities, tuned threshold")
    pipeline_tag: ClassVar[str | None] = "token-classification"
    default_columns: ClassVar[dict[str, str]] = {"text_column": "tokens", "label_column": "spans"}
    default_file_format: ClassVar[str] = "conll"
    head_modules: ClassVar[tuple[str, ...]] = ("start_ffnn", "end_ffnn", "span_attention", "width_embedding",
                                               "span_classifier")
    default_metric: ClassVar[str] = "best_f1"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    default_head_learning_rate: ClassVar[float] = 1e-3
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("max_span_width", 8, "the longest candidate span, in words", kind="int", minimum=1),
        TaskOption("word_pooling", "first", "a word's vector: its first subword's, or the mean of its subwords",
                   kind="choice", choices=("first", "mean")),
        TaskOption("decoding", "nested", "kept spans may nest but never cross (nested), or never overlap (flat)",
                   kind="choice", choices=("nested", "flat")),
        TaskOption("per_type_threshold", False, "tune one threshold per entity type instead of one for all",
                   kind="flag"),
        TaskOption("null_weight", 1.0, "the loss weight of NULL (non-entity) spans", kind="number", minimum=0,
                   exclusive_minimum=True),
        TaskOption("null_sample", 1.0, "the share of NULL spans trained on at each step, drawn afresh each time",
                   kind="number", minimum=0, maximum=1, exclusive_minimum=True),
        TaskOption("ffnn_dim", 150, "the size of the span FFNNs", kind="int", minimum=1),
        TaskOption("width_dim", 20, "the size of the span width embedding", kind="int", minimum=1),
        TaskOption("stride", None, "subwords two consecutive windows share (null: a quarter of the window)",
                   kind="int", minimum=0, optional=True),
        TaskOption("threshold", None, "use this entity probability threshold instead of tuning one (null: tune)",
                   kind="number", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True,
                   optional=True),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = options = self.read_options()
        fixed = options["threshold"]
        self.max_width = options["max_span_width"]
        self.types: list[str] = []
        self.threshold: float | dict[str, float] = float(fixed) if fixed is not None else 0.5
        self.tag_scheme = ""
        self.too_wide: dict[str, int] = {}  # file -> gold spans longer than max_span_width
        self.duplicates: dict[str, int] = {}  # file -> gold spans that repeat one of their sentence
        self._split_columns: dict[str, tuple[str, str, str]] = {}  # split -> (tokens, spans, layout)
        self.tokenizer: Any = None

    @property
    def labels(self) -> list[str]:
        return [NULL, *self.types]

    # -- reading the layouts -----------------------------------------------------------------
    def _columns_for(self, raw: Dataset) -> tuple[str, str, str]:
        """(tokens column, spans column, layout) of a split: the configured columns, else GENIA's
        ``sentence``/``ner`` or BIO ``tags``; the layout (spans, genia or tags) is read off the
        spans column's contents."""
        names = raw.column_names
        tokens = self.settings.text_column
        if tokens not in names and "sentence" in names:
            tokens = "sentence"
        spans_col = self.settings.label_column
        if spans_col not in names:
            spans_col = next((c for c in ("ner", "tags") if c in names), spans_col)
        return tokens, spans_col, layout_of(raw[spans_col] if spans_col in names else [])

    def _gold(self, tokens: list[str], value: Any, layout: str, here: str) -> list[tuple[int, int, str]]:
        """A sentence's gold spans, each once: a span given twice (same start, end and type) is
        one entity, for training and scoring alike."""
        return list(dict.fromkeys(read_spans(value, len(tokens), layout, here, self.tag_scheme)))

    def _split_gold(self, raw: Dataset, source: str) -> list[list[tuple[int, int, str]]]:
        tokens_col, spans_col, layout = self._columns_for(raw)
        return [self._gold(row[tokens_col], row[spans_col], layout, where(source, row))
                for row in iter_rows(raw, [tokens_col, spans_col])]

    def _count_duplicates(self, raw: Dataset, source: str) -> None:
        """Gold spans given twice in a sentence are counted once; say how many and where the
        first one is (and keep the count with the model, as ``duplicate_gold_spans``)."""
        tokens_col, spans_col, layout = self._columns_for(raw)
        duplicates, first = 0, None
        for row in iter_rows(raw, [tokens_col, spans_col]):
            given = read_spans(row[spans_col], len(row[tokens_col]), layout, where(source, row), self.tag_scheme)
            extra = len(given) - len(set(given))
            if extra and first is None:
                first = place_of(row)
            duplicates += extra
        if duplicates:
            self.duplicates[source] = duplicates
            warnings.warn(f"{source}: {duplicates} gold span(s) repeat a span of their sentence (same start, end "
                          f"and type) and are counted once" + (f" (the first on {first})" if first else ""),
                          stacklevel=3)

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        train = raw["train"]
        tokens_col, spans_col, layout = self._columns_for(train)
        require_columns(train, [tokens_col, spans_col], sources["train"],
                        {tokens_col: "--text-column", spans_col: "--label-column"})
        if layout == "tags":
            self.tag_scheme = self._detect_scheme(train, spans_col, sources["train"])
            if self.tag_scheme == "none":
                raise TaskError(f"{sources['train']}: the tags have no B-/I- prefixes; span-ner needs entity tags")
        self._check_tokens(train, tokens_col, sources["train"])
        self.types = sorted({label for gold in self._split_gold(train, sources["train"]) for _, _, label in gold})
        if not self.types:
            raise TaskError(f"{sources['train']}: no entity spans in the training data")
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])

    @staticmethod
    def _detect_scheme(train: Dataset, tags_col: str, source: str) -> str:
        """The tagging scheme of the whole training split; tags of several schemes are an error
        naming the first odd one."""
        try:
            return detect_scheme(column_values(train, tags_col))
        except MixedSchemesError as exc:
            odd, usual = exc.odd, exc.usual
            raise DataError(exc.explain(where_token(source, train[odd.sentence], odd.index),
                                        token_place(train[usual.sentence], usual.index))) from None

    def _check_scheme(self, raw: Dataset, tags_col: str, source: str) -> None:
        """Tagged data is in the scheme of the training data, whose entities the model learnt."""
        if not self.tag_scheme:  # trained on spans: the tags are read in their own scheme
            self.tag_scheme = self._detect_scheme(raw, tags_col, source)
        foreign = first_foreign_tag(column_values(raw, tags_col), self.tag_scheme)
        if foreign is not None:
            raise DataError(f"{where_token(source, raw[foreign.sentence], foreign.index)}: "
                            f"{describe_tag(foreign, self.tag_scheme)}, but the training data's tags are "
                            f"{scheme_words(self.tag_scheme)}; write the file's tags in the same scheme")

    def _check_tokens(self, raw: Dataset, tokens_col: str, source: str) -> None:
        for row in iter_rows(raw, [tokens_col]):
            tokens = row[tokens_col]
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise DataError(f"{where(source, row)}: column '{tokens_col}' must be a non-empty list of tokens")

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        tokens_col, spans_col, layout = self._columns_for(raw)
        labelled = split != "predict"
        require_columns(raw, [tokens_col] + ([spans_col] if labelled else []), source,
                        {tokens_col: "--text-column", spans_col: "--label-column"})
        self._split_columns[split] = (tokens_col, spans_col, layout)
        self._check_tokens(raw, tokens_col, source)
        if not labelled:
            return
        if layout == "tags":
            self._check_scheme(raw, spans_col, source)
        self._count_duplicates(raw, source)
        too_wide = 0
        for row, gold in zip(iter_rows(raw, []), self._split_gold(raw, source)):
            for start, end, label in gold:
                if label not in self.types:
                    raise DataError(f"{where(source, row)}: entity type '{label}' was never seen in training "
                                    f"(training types: {', '.join(self.types)})")
                too_wide += end - start > self.max_width
        if too_wide:
            self.too_wide[source] = too_wide
            warnings.warn(f"{source}: {too_wide} gold span(s) are longer than max_span_width={self.max_width} words "
                          f"and can never be found", stacklevel=2)

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = InputPadder(tokenizer, extra=())
        self._prefix, self._suffix = special_tokens_around(tokenizer)
        self._capacity = self.settings.max_length - len(self._prefix) - len(self._suffix)
        stride = self.options["stride"]
        self._stride = self._capacity // 4 if stride is None else stride
        if self._stride >= self._capacity:
            raise TaskError(f"task_options.stride: {self._stride} is not allowed; it must be smaller than the "
                            f"window ({self._capacity} subwords)")
        self._uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def state(self) -> dict[str, Any]:
        return {"types": self.types, "threshold": self.threshold, "tag_scheme": self.tag_scheme,
                "gold_spans_too_wide": self.too_wide, "duplicate_gold_spans": self.duplicates}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.types = list(state["types"])
        if self.options["threshold"] is None:
            self.threshold = state["threshold"]
        self.tag_scheme = state.get("tag_scheme", "")
        self.too_wide = dict(state.get("gold_spans_too_wide") or {})
        self.duplicates = dict(state.get("duplicate_gold_spans") or {})
        self._set_tokenizer(tokenizer)

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        o = self.options
        return SpanClassifier(encoder, len(self.labels), self.max_width, o["word_pooling"], o["ffnn_dim"],
                              o["width_dim"], float(o["null_weight"]), float(o["null_sample"]))

    # -- features ----------------------------------------------------------------------------
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """One feature per window: ids, each word's first subword and each subword's word, the
        label of every (start, width) candidate, and which candidates this window predicts."""
        tokens_col, spans_col, layout = self._split_columns.get(split, (self.settings.text_column, "", "spans"))
        sentences = batch[tokens_col]
        labelled = split != "predict"
        golds = [self._gold(t, v, layout, "data") for t, v in zip(sentences, batch[spans_col])] if labelled \
            else [[] for _ in sentences]
        width = self.max_width
        label_id = {label: i for i, label in enumerate(self.labels)}
        out: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "example_index", "word_positions",
                                                "subword_words", "first_word", "own")}
        if self._uses_token_types:
            out["token_type_ids"] = []
        if labelled:
            out["span_labels"] = []
        for k, pieces in enumerate(word_pieces(self.tokenizer, sentences)):
            lengths = [len(p) for p in pieces]
            windows = plan_windows(lengths, self._capacity, self._stride)
            owner = span_owners(lengths, windows, width, self._capacity)
            gold = {(s, e): label_id[label] for s, e, label in golds[k]}
            for w, (first, last) in enumerate(windows):
                ids, positions = window_inputs(pieces, (first, last), self._capacity, self._prefix, self._suffix)
                subword_words = [-1] * len(ids)
                for i, position in enumerate(positions):
                    end = positions[i + 1] if i + 1 < len(positions) else len(ids) - len(self._suffix)
                    subword_words[position:end] = [i] * (end - position)
                n = last - first
                out["input_ids"].append(ids)
                out["attention_mask"].append([1] * len(ids))
                if self._uses_token_types:
                    out["token_type_ids"].append([0] * len(ids))
                out["example_index"].append(batch[ROW_INDEX][k])
                out["word_positions"].append(positions)
                out["subword_words"].append(subword_words)
                out["first_word"].append(first)
                out["own"].append([int(i + v <= n and owner.get((first + i, first + i + v)) == w)
                                   for i in range(n) for v in range(1, width + 1)])
                if labelled:
                    out["span_labels"].append([gold.get((first + i, first + i + v), 0) if i + v <= n else -100
                                               for i in range(n) for v in range(1, width + 1)])
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collator(features)
        batch["word_positions"] = padded([f["word_positions"] for f in features], -1)
        batch["subword_words"] = padded([f["subword_words"] for f in features], -1, width=batch["input_ids"].size(1))
        if "span_labels" in features[0]:
            words = batch["word_positions"].size(1)
            batch["span_labels"] = padded([f["span_labels"] for f in features], -100, width=self.max_width * words)
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Sentences as token lists, or as strings split on white space, or dicts of columns."""
        return sentence_rows(inputs, self.settings.text_column, self.name)

    # -- outputs -----------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """Each window's own candidates with their best type and its probability (those above the
        lowest threshold ever tried are kept), merged per sentence and decoded."""
        sentences = column_values(raw, self._columns_for(raw)[0])
        example_of = np.asarray(column_values(features, "example_index"))
        pending = np.bincount(example_of, minlength=len(raw))
        windows = features.select_columns(["first_word", "own"])
        scored: dict[int, list[tuple[int, int, str, float]]] = {}
        results: list[dict[str, Any] | None] = [None] * len(raw)
        width = self.max_width
        for indices, arrays in outputs:
            info = windows[indices.tolist()]
            for r, feature in enumerate(indices.tolist()):
                example = int(example_of[feature])
                own = np.asarray(info["own"][r], dtype=bool)
                logits = arrays["logits"][r][: len(own) // width].reshape(len(own), -1)
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                probabilities = shifted / shifted.sum(axis=1, keepdims=True)
                best = probabilities[:, 1:].argmax(axis=1) + 1
                best_p = probabilities[np.arange(len(best)), best]
                keep = np.flatnonzero(own & (best_p >= MIN_PROBABILITY))
                first = info["first_word"][r]
                found = scored.setdefault(example, [])
                for c in keep.tolist():
                    start = first + c // width
                    found.append((start, start + c % width + 1, self.labels[best[c]], float(best_p[c])))
                pending[example] -= 1
                if pending[example] == 0:
                    results[example] = self._decide(sentences[example], scored.pop(example))
        return results  # type: ignore[return-value]

    def _decide(self, tokens: list[str], candidates: list[tuple[int, int, str, float]]) -> dict[str, Any]:
        return {"tokens": list(tokens), "spans": self._entities(tokens, candidates), "candidates": candidates}

    def _entities(self, tokens: list[str], candidates: list[tuple[int, int, str, float]],
                  threshold: float | dict[str, float] | None = None) -> list[dict[str, Any]]:
        chosen = decode(candidates, self.threshold if threshold is None else threshold, self.options["decoding"])
        return [{"start": s, "end": e, "label": label, "score": p, "text": " ".join(tokens[s:e])}
                for s, e, label, p in chosen]

    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> bool:
        """Tune the threshold (one, or one per type) for the best validation F1."""
        if self.options["threshold"] is not None:
            return False
        self.threshold, _ = calibrate_threshold([p["candidates"] for p in predictions],
                                                self._split_gold(raw, "validation"), self.options["decoding"],
                                                self.options["per_type_threshold"])
        return True

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        """Span metrics of the entities decoded at the current threshold (predictions keep their
        candidates, so a threshold tuned after predicting applies)."""
        predicted = [[(s["start"], s["end"], s["label"]) for s in self._entities(p["tokens"], p["candidates"])]
                     for p in predictions]
        gold = self._split_gold(raw, "data")
        metrics = span_metrics(gold, predicted, self.max_width)
        metrics["threshold"] = self.threshold
        metrics["decoding"] = self.options["decoding"]
        # the F1 at this split's own best threshold: what picks the best checkpoint in training,
        # before the threshold is tuned once on the validation predictions of the chosen weights
        metrics["best_threshold"], metrics["best_f1"] = calibrate_threshold(
            [p["candidates"] for p in predictions], gold, self.options["decoding"])
        return metrics

    def _summary(self, metrics: dict[str, Any]) -> list[Block]:
        """Exact and boundary-only scores, the decoding and span counts, and the per-type figures."""
        rows = [["exact span and type (headline)", metrics["precision"], metrics["recall"], metrics["f1"]],
                ["boundaries only (type ignored)", *[metrics["boundary"][k] for k in ("precision", "recall", "f1")]]]
        threshold = metrics["threshold"]
        shown = (", ".join(f"{k} {v:.2f}" for k, v in threshold.items()) if isinstance(threshold, dict)
                 else f"{threshold:.2f}")
        counts = [["decoding", metrics["decoding"]], ["threshold (tuned on validation, saved)", shown],
                  ["sentences", metrics["num_sentences"]], ["gold spans", metrics["num_gold"]],
                  ["nested gold spans (inside another)", metrics["num_gold_nested"]],
                  ["predicted spans", metrics["num_predicted"]],
                  [f"gold spans longer than max_span_width ({self.max_width}): never found",
                   metrics["num_gold_too_wide"]]]
        if "loss" in metrics:
            counts.append(["loss", metrics["loss"]])
        return [table("Scores", ["scoring", "precision", "recall", "F1"], rows),
                table("Decoding and counts", ["", "value"], counts),
                per_label_table(metrics["per_type"], "type", "Per entity type")]

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """The summary, sentence-level bootstrap statistics (exact spans, boundaries), the
        per-type chart, and the error buckets with examples (nested entities shown nested)."""
        gold = [sorted(set(g)) for g in self._split_gold(raw, "data")]
        predicted = [sorted({(s["start"], s["end"], s["label"]) for s in self._entities(p["tokens"], p["candidates"])})
                     for p in predictions]
        exact = micro_prf("", [len(set(g) & set(p)) for g, p in zip(gold, predicted)],
                          [len(p) for p in predicted], [len(g) for g in gold])
        gold_bounds = [{s[:2] for s in g} for g in gold]
        predicted_bounds = [{s[:2] for s in p} for p in predicted]
        boundary = micro_prf("boundary.", [len(g & p) for g, p in zip(gold_bounds, predicted_bounds)],
                             [len(p) for p in predicted_bounds], [len(g) for g in gold_bounds])
        return ReportContent(
            summary=self._summary(metrics),
            headline=[("precision (exact span and type)", "precision"), ("recall (exact span and type)", "recall"),
                      ("F1 (exact span and type)", "f1"), ("F1 (boundaries only)", "boundary.f1")],
            bootstrap=[*exact, *boundary],
            resampling_unit="sentence",
            sections=[Section("Per entity type", [per_label_chart(metrics["per_type"], "Per entity type")]),
                      entity_error_section([p["tokens"] for p in predictions], gold, predicted)],
        )

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """Gold spans per entity type in a split, for the model card."""
        from collections import Counter

        return dict(sorted(Counter(s[2] for g in self._split_gold(raw, "data") for s in g).items()))

    def write_predictions(self, predictions: list[dict[str, Any]], path: Any) -> list[Any]:
        import json

        from finetune_kit.files import atomic_write_text

        atomic_write_text(path, "".join(json.dumps({"tokens": p["tokens"], "spans": p["spans"]}, ensure_ascii=False)
                                        + "\n" for p in predictions))
        return [path]


def span_owners(lengths: list[int], windows: list[tuple[int, int]], max_width: int,
                capacity: int) -> dict[tuple[int, int], int]:
    """For each candidate span inside some window, the window where it has the most context: the
    smaller of the subword counts before its first word and after its last word."""
    clipped = [min(n, capacity) for n in lengths]
    owner: dict[tuple[int, int], int] = {}
    best: dict[tuple[int, int], int] = {}
    for w, (first, last) in enumerate(windows):
        before = np.concatenate([[0], np.cumsum(clipped[first:last])])
        total = before[-1]
        for i in range(first, last):
            for v in range(1, max_width + 1):
                if i + v > last:
                    break
                context = int(min(before[i - first], total - before[i + v - first]))
                if context > best.get((i, i + v), -1):
                    best[(i, i + v)], owner[(i, i + v)] = context, w
    return owner
