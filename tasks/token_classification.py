"""``token-classification``: one tag per word (NER in BIO/BIOES/BILOU, chunking, POS tags).

Words are split into subwords; the model reads every subword and the tag of a word is
decoded from its first subword, so there is exactly one tag per input word and scores are
computed on words. Sentences longer than ``max_length`` are cut into overlapping windows of
whole words, and each word is predicted from the window where it has the most context.

The model is the encoder's architecture with its own transformers token-classification head
(``AutoModelForTokenClassification``: dropout + linear on every subword, cross-entropy on the
labelled subwords), saved as that class saves itself, so transformers and
``pipeline("token-classification", aggregation_strategy="first")`` load the directory as it is.
The options (``-o key=value``) are declared in ``TokenClassificationTask.task_options``
(``finetune-kit tasks token-classification`` lists them). ``head=finetune-kit`` builds
finetune-kit's own tagger instead (``TokenTagger``: the same dropout + linear layer and loss, saved
as finetune-kit's model); ``crf`` always uses it, with a linear-chain CRF over the words'
emissions, trained with the CRF's log-likelihood and decoded with Viterbi over the whole
sentence, never through a transition the scheme forbids. A model saved without a recorded head
(before the transformers head was the default) loads as that tagger, which it was trained as.
``scheme=auto`` takes the scheme that admits every tag of the training data
(``tagging.detect_scheme``; tags of several schemes are an error naming the first odd line),
which every labelled file (validation, test, evaluation) must then be written in; IOB1 is
converted to IOB2 on reading; a scheme given explicitly reads every file as that scheme. Without ``strict_tags``, a sequence the scheme forbids is read as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification
from transformers.utils import ModelOutput

from finetune_kit.alignment import (
    IGNORE_INDEX,
    best_windows,
    plan_windows,
    sentence_rows,
    special_tokens_around,
    subword_labels,
    window_inputs,
    word_pieces,
)
from finetune_kit.batching import MODEL_INPUTS, padded
from finetune_kit.columns import column_values
from finetune_kit.crf import LinearChainCRF, viterbi
from finetune_kit.data import iter_rows, require_columns, token_place, where, where_token
from finetune_kit.heads import has_transformers_head, head_dropout, head_module_names, transformers_model
from finetune_kit.metrics import entity_metrics
from finetune_kit.entity_errors import entity_error_section
from finetune_kit.report_content import (
    ReportContent,
    Section,
    confusion_heatmaps,
    per_label_chart,
    per_label_table,
    table,
)
from finetune_kit.stats import micro_prf, ratio_of
from finetune_kit.tagging import (
    MixedSchemesError,
    TagError,
    check_tag,
    continuation_tag,
    describe_tag,
    detect_scheme,
    first_foreign_tag,
    first_invalid_transition,
    iob1_to_iob2,
    label_set,
    scheme_name,
    scheme_words,
    spans,
    transition_constraints,
)
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


# The ``head`` option's values (saved in ``state()``): the architecture's own transformers
# token-classification head, or finetune-kit's ``TokenTagger`` (with a CRF, or saved before the
# head was recorded).
TRANSFORMERS_HEAD, OWN_HEAD = "transformers", "finetune-kit"


@dataclass
class TaggerOutput(ModelOutput):
    """Loss, per-subword tag scores, and (with a CRF) its transition scores for decoding."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    # (batch, tags + 2, tags): transitions, start row, end row; the same for every example,
    # repeated so that it travels with the batch through gathering across processes.
    crf_scores: torch.Tensor | None = None


class TokenTagger(nn.Module):
    """Encoder + dropout + linear layer on every subword, optionally a CRF over words."""

    def __init__(self, encoder: nn.Module, num_labels: int, use_crf: bool = False) -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)
        self.crf = LinearChainCRF(num_labels) if use_crf else None

    def forward(
        self, labels: torch.Tensor | None = None, word_positions: torch.Tensor | None = None, **inputs: torch.Tensor
    ) -> TaggerOutput:
        hidden = self.encoder(**inputs).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            loss = self.crf_loss(logits, labels, word_positions) if self.crf is not None else \
                nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        crf_scores = None
        if self.crf is not None:
            crf_scores = self.crf.stacked_scores().unsqueeze(0).expand(logits.size(0), -1, -1)
        return TaggerOutput(loss=loss, logits=logits, crf_scores=crf_scores)

    def crf_loss(self, logits: torch.Tensor, labels: torch.Tensor, word_positions: torch.Tensor) -> torch.Tensor:
        """The CRF's negative log-likelihood over the words of each window, per word.

        With ``subword_labels=all`` the later subwords carry labels too; they are trained
        with cross-entropy, since the CRF reads one emission (the first subword's) per word.
        """
        mask = word_positions >= 0
        positions = word_positions.clamp(min=0)
        emissions = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.size(-1)))
        word_labels = labels.gather(1, positions)
        nll = self.crf.negative_log_likelihood(emissions, word_labels, mask)
        loss = nll.sum() / mask.sum().clamp(min=1)
        rest = labels.scatter(1, positions, IGNORE_INDEX)
        if bool((rest != IGNORE_INDEX).any()):
            loss = loss + nn.functional.cross_entropy(logits.float().flatten(0, 1), rest.flatten(),
                                                      ignore_index=IGNORE_INDEX)
        return loss


class TokenClassificationTask(TaskBase):
    name: ClassVar[str] = "token-classification"
    description: ClassVar[str] = ("Word tagging with subword alignment: NER (BIO/BIOES), chunking, POS; "
                                  "long sentences windowed; optional CRF")
    pipeline_tag: ClassVar[str | None] = "token-classification"
    default_columns: ClassVar[dict[str, str]] = {"text_column": "tokens", "label_column": "tags"}
    default_file_format: ClassVar[str] = "conll"
    head_modules: ClassVar[tuple[str, ...]] = ("classifier", "crf")
    default_metric: ClassVar[str] = "f1"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("head", TRANSFORMERS_HEAD, "the tagging head: the architecture's own transformers head (saved as "
                   "what AutoModelForTokenClassification loads) or finetune-kit's, which crf always uses",
                   kind="choice", choices=(TRANSFORMERS_HEAD, OWN_HEAD)),
        TaskOption("crf", False, "a linear-chain CRF over the words' tags, decoded with Viterbi", kind="flag",
                   shortcut="--crf"),
        TaskOption("subword_labels", "first", "train on each word's first subword only, or on all of them "
                   "(B-X -> I-X after the first)", kind="choice", choices=("first", "all")),
        TaskOption("scheme", "auto", "the tag scheme: auto (detected from the training tags), IOB2 (BIO), IOB1, "
                   "BIOES, BILOU or none (plain labels)"),
        TaskOption("strict_tags", False, "a tag sequence the scheme forbids (I-X after O) is an error",
                   kind="flag"),
        TaskOption("stride", None, "subwords two consecutive windows share (null: a quarter of the window)",
                   kind="int", minimum=0, optional=True),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = options = self.read_options()
        self.use_crf, self.strict_tags = options["crf"], options["strict_tags"]
        self.head = self._head(options)
        self.subword_strategy = options["subword_labels"]
        requested = str(options["scheme"])
        try:
            self.requested_scheme = "auto" if requested.lower() == "auto" else scheme_name(requested)
        except TagError as exc:
            raise TaskError(f"task_options.scheme: {exc}") from None
        self.scheme = ""  # the scheme the model tags in (IOB1 data is converted to IOB2)
        self.source_scheme = ""  # the scheme of the training data
        self.labels: list[str] = []
        self.label_to_id: dict[str, int] = {}
        self.class_label_names: list[str] | None = None
        self.tokenizer: Any = None

    def _head(self, options: dict[str, Any]) -> str:
        """The CRF is finetune-kit's head: ``crf`` takes it unless the transformers head is asked for."""
        if not options["crf"]:
            return options["head"]
        if self.settings.options.get("head") == TRANSFORMERS_HEAD:
            raise TaskError(f"task_options.head: crf needs finetune-kit's head; use head={OWN_HEAD} or leave "
                            f"head unset")
        return OWN_HEAD

    # -- columns and tags ----------------------------------------------------------------------
    def _column_hints(self) -> dict[str, str]:
        return {self.settings.text_column: "--text-column", self.settings.label_column: "--label-column"}

    def _tags_of(self, raw_tags: Iterable[Any]) -> list[str]:
        """Tags as strings (hub class-label integers mapped to their names)."""
        if self.class_label_names is not None:
            return [self.class_label_names[t] if isinstance(t, int) else label_name(t) for t in raw_tags]
        return [label_name(t) for t in raw_tags]

    def _model_tags(self, raw_tags: Iterable[Any]) -> list[str]:
        """Tags in the scheme the model uses (IOB1 converted to IOB2)."""
        tags = self._tags_of(raw_tags)
        return iob1_to_iob2(tags) if self.source_scheme == "IOB1" else tags

    @staticmethod
    def _class_label_names(raw: Dataset, column: str) -> list[str] | None:
        feature = raw.features.get(column)
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
        return list(names) if names else None

    # -- setup and validation ------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        train, source = raw["train"], sources["train"]
        require_columns(train, [self.settings.text_column, self.settings.label_column], source, self._column_hints())
        self.class_label_names = self._class_label_names(train, self.settings.label_column)
        self._check_structure(train, "train", source)
        train_tags = [self._tags_of(tags) for tags in column_values(train, self.settings.label_column)]
        if self.requested_scheme == "auto":
            self.source_scheme = self._detect_scheme(train, train_tags, source)
        else:
            self.source_scheme = self.requested_scheme
        self.scheme = "IOB2" if self.source_scheme == "IOB1" else self.source_scheme
        if self.source_scheme == "IOB1":
            train_tags = [iob1_to_iob2(tags) for tags in train_tags]
        self.set_labels(label_set((t for tags in train_tags for t in tags), self.scheme))
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        labelled = split != "predict"
        require_columns(raw, [self.settings.text_column] + ([self.settings.label_column] if labelled else []),
                        source, self._column_hints())
        self._check_structure(raw, split, source)
        if labelled:
            if self.requested_scheme == "auto":
                self._check_scheme(raw, source)
            self._check_tags(raw, source)

    def _detect_scheme(self, train: Dataset, tags: list[list[str]], source: str) -> str:
        """The scheme of the whole training split; tags of several schemes are an error naming
        the first odd one."""
        try:
            return detect_scheme(tags)
        except MixedSchemesError as exc:
            odd, usual = exc.odd, exc.usual
            raise DataError(exc.explain(where_token(source, train[odd.sentence], odd.index),
                                        token_place(train[usual.sentence], usual.index), "-o scheme")) from None

    def _check_scheme(self, raw: Dataset, source: str) -> None:
        """Labelled data is in the scheme detected in training: an IOB2 file scored by a BIOES
        model would lose every entity that does not end with E-/S-."""
        foreign = first_foreign_tag([self._tags_of(tags) for tags in column_values(raw, self.settings.label_column)],
                                    self.source_scheme)
        if foreign is not None:
            raise DataError(f"{where_token(source, raw[foreign.sentence], foreign.index)}: "
                            f"{describe_tag(foreign, self.source_scheme)}, but the model's tags are "
                            f"{scheme_words(self.source_scheme)}; write the file's tags in the same scheme")

    def _check_structure(self, raw: Dataset, split: str, source: str) -> None:
        """Tokens are a non-empty list of strings; tags (when labelled) one per token."""
        tokens_col, tags_col = self.settings.text_column, self.settings.label_column
        labelled = split != "predict"
        for row in iter_rows(raw, [tokens_col] + ([tags_col] if labelled else [])):
            tokens = row[tokens_col]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise DataError(f"{where(source, row)}: column '{tokens_col}' must be a list of token strings")
            if not tokens:
                raise DataError(f"{where(source, row)}: a sentence without tokens")
            if labelled:
                tags = row[tags_col]
                if not isinstance(tags, list):
                    raise DataError(f"{where(source, row)}: column '{tags_col}' must be a list of tags")
                if len(tags) != len(tokens):
                    raise DataError(f"{where(source, row)}: {len(tokens)} tokens but {len(tags)} tags")

    def _check_tags(self, raw: Dataset, source: str) -> None:
        """Every tag fits the scheme and was seen in training; with ``strict_tags`` every
        sequence is one the scheme allows."""
        tags_col, tokens_col = self.settings.label_column, self.settings.text_column
        for row in iter_rows(raw, [tokens_col, tags_col]):
            tags = self._tags_of(row[tags_col])
            for i, tag in enumerate(tags):
                try:
                    check_tag(tag, self.source_scheme)
                except TagError as exc:
                    raise DataError(f"{where_token(source, row, i)}: {exc}") from None
            if self.strict_tags and self.source_scheme not in ("IOB1", "none"):
                bad = first_invalid_transition(tags, self.source_scheme)
                if bad == len(tags):
                    raise DataError(f"{where_token(source, row, bad - 1)}: the sentence ends inside an entity "
                                    f"({tags[-1]!r}), which {self.scheme} does not allow (strict_tags)")
                if bad is not None:
                    previous = repr(tags[bad - 1]) if bad else "the sentence start"
                    raise DataError(f"{where_token(source, row, bad)}: {tags[bad]!r} cannot follow {previous} "
                                    f"in {self.scheme} (strict_tags)")
            for i, tag in enumerate(self._model_tags(row[tags_col])):
                if tag not in self.label_to_id:
                    raise DataError(f"{where_token(source, row, i)}: tag '{tag}' was never seen in training "
                                    f"(training tags: {', '.join(self.labels)})")

    def set_labels(self, labels: list[str]) -> None:
        if self.scheme != "none" and len(labels) < 2:
            raise TaskError("the training data has no entity tags, only O; nothing to learn")
        if len(labels) < 2:
            raise TaskError(f"the training data has {len(labels)} tag(s); tagging needs at least 2")
        self.labels = labels
        self.label_to_id = {label: i for i, label in enumerate(labels)}
        if self.scheme == "none":
            self.default_metric = "token_accuracy"  # instance attribute: the best-checkpoint metric
        self._continuation = [self.label_to_id.get(continuation_tag(t), i) for i, t in enumerate(labels)]
        self._constraints = transition_constraints(labels, self.scheme)

    def _set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collator = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)
        tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True
        self._prefix, self._suffix = special_tokens_around(tokenizer)
        self._capacity = self.settings.max_length - len(self._prefix) - len(self._suffix)
        stride = self.options["stride"]
        self._stride = self._capacity // 4 if stride is None else stride
        if self._stride >= self._capacity:
            raise TaskError(f"task_options.stride: {self._stride} is not allowed; it must be smaller than the "
                            f"window ({self._capacity} subwords: max_length minus the special tokens)")
        self._uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "scheme": self.scheme, "source_scheme": self.source_scheme,
                "class_label_names": self.class_label_names, "head": self.head}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        """A model saved before the head was recorded is finetune-kit's tagger, as it was trained."""
        self.head = state.get("head", OWN_HEAD)
        self.scheme, self.source_scheme = state["scheme"], state["source_scheme"]
        self.class_label_names = state.get("class_label_names")
        self.set_labels(list(state["labels"]))
        self._set_tokenizer(tokenizer)

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        if self.head == TRANSFORMERS_HEAD and has_transformers_head(AutoModelForTokenClassification, encoder.config):
            return self._transformers_model(encoder)
        self.head = OWN_HEAD  # also for an architecture transformers has no tagger of (shipped code)
        return TokenTagger(encoder, len(self.labels), use_crf=self.use_crf)

    def _transformers_model(self, encoder: nn.Module) -> nn.Module:
        """``AutoModelForTokenClassification`` of the encoder's architecture, with the tags in its
        configuration; its head modules are the ones LoRA saves and ``head_learning_rate`` trains."""
        model = transformers_model(AutoModelForTokenClassification, encoder, num_labels=len(self.labels),
                                   id2label=dict(enumerate(self.labels)), label2id=dict(self.label_to_id))
        self.head_modules = head_module_names(model)
        return model

    # -- features ----------------------------------------------------------------------------
    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        """One feature per window: input ids, subword labels, where each word starts, and
        which words this window predicts (those with the most context here)."""
        sentences = batch[self.settings.text_column]
        labelled = split != "predict"
        out: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "example_index", "word_positions",
                                                "first_word", "predict_words")}
        if self._uses_token_types:
            out["token_type_ids"] = []
        if labelled:
            out["labels"] = []
        continuation = self._continuation if self.subword_strategy == "all" else None
        for k, pieces in enumerate(word_pieces(self.tokenizer, sentences)):
            lengths = [len(p) for p in pieces]
            windows = plan_windows(lengths, self._capacity, self._stride)
            owners = best_windows(lengths, windows, self._capacity)
            if labelled:
                word_labels = [self.label_to_id[t] for t in self._model_tags(batch[self.settings.label_column][k])]
            for w, window in enumerate(windows):
                ids, positions = window_inputs(pieces, window, self._capacity, self._prefix, self._suffix)
                out["input_ids"].append(ids)
                out["attention_mask"].append([1] * len(ids))
                if self._uses_token_types:
                    out["token_type_ids"].append([0] * len(ids))
                out["example_index"].append(batch[ROW_INDEX][k])
                out["word_positions"].append(positions)
                out["first_word"].append(window[0])
                out["predict_words"].append([i for i in range(*window) if owners[i] == w])
                if labelled:
                    out["labels"].append(subword_labels(word_labels, lengths, self._capacity, len(self._prefix),
                                                        len(self._suffix), window, continuation))
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        items = [{k: f[k] for k in (*MODEL_INPUTS, "labels") if k in f} for f in features]
        batch = dict(self._collator(items))
        if self.use_crf and "labels" in batch:
            batch["word_positions"] = padded([f["word_positions"] for f in features], -1)
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Sentences as token lists, or as strings split on white space, or dicts of columns."""
        return sentence_rows(inputs, self.settings.text_column, self.name)

    # -- outputs -----------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """Merge the windows' word scores (each word from its best window) and decode each
        sentence once all its windows are in: argmax, or Viterbi over the whole sentence."""
        sentences = column_values(raw, self.settings.text_column)
        example_of = column_values(features, "example_index")
        positions_of = column_values(features, "word_positions")
        first_of = column_values(features, "first_word")
        predicted_words = column_values(features, "predict_words")
        pending = [len(words) for words in sentences]
        scores: dict[int, np.ndarray] = {}
        results: list[dict[str, Any] | None] = [None] * len(raw)
        crf_scores: np.ndarray | None = None
        for indices, arrays in outputs:
            if "crf_scores" in arrays:
                crf_scores = arrays["crf_scores"][0]
            for row, feature in enumerate(indices.tolist()):
                example = example_of[feature]
                words = predicted_words[feature]
                if not words:
                    continue
                table = scores.setdefault(example, np.zeros((pending[example], len(self.labels)), dtype=np.float32))
                first, positions = first_of[feature], positions_of[feature]
                table[words] = arrays["logits"][row][[positions[i - first] for i in words]]
                pending[example] -= len(words)
                if pending[example] == 0:
                    results[example] = self._decode(sentences[example], scores.pop(example), crf_scores)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} sentence(s) got no prediction for every word (first: row {missing[0]})")
        return results  # type: ignore[return-value]

    def _decode(self, tokens: list[str], word_scores: np.ndarray, crf_scores: np.ndarray | None) -> dict[str, Any]:
        if crf_scores is not None:
            n = len(self.labels)
            path = viterbi(word_scores, crf_scores[:n], crf_scores[n], crf_scores[n + 1], self._constraints)
        else:
            path = word_scores.argmax(axis=1).tolist()
        tags = [self.labels[i] for i in path]
        entities = [{"start": s, "end": e, "type": kind, "text": " ".join(tokens[s:e])}
                    for s, e, kind in spans(tags, self.scheme)]
        return {"tokens": list(tokens), "tags": tags, "entities": entities}

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        gold = [self._model_tags(tags) for tags in column_values(raw, self.settings.label_column)]
        return entity_metrics(gold, [p["tags"] for p in predictions], self.scheme)

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """Both scoring modes side by side, the counts and the per-type figures of each mode;
        sentence-level bootstrap statistics (strict entities, token accuracy); per-type charts
        and the entity error buckets. For plain labels: the per-tag figures and the confusion
        matrix."""
        gold = [self._model_tags(tags) for tags in column_values(raw, self.settings.label_column)]
        predicted = [p["tags"] for p in predictions]
        token_accuracy = ratio_of("token_accuracy", [sum(a == b for a, b in zip(g, p)) for g, p in zip(gold, predicted)],
                                  [len(g) for g in gold])
        if self.scheme == "none":
            main = [[k, metrics[k]] for k in ("token_accuracy", "macro_f1", "loss", "num_sentences", "num_tokens")
                    if k in metrics]
            return ReportContent(
                summary=[table("Metrics", ["metric", "value"], main),
                         per_label_table(metrics["per_label"], "tag", "Per tag")],
                headline=[("token accuracy", "token_accuracy"), ("macro F1", "macro_f1")],
                bootstrap=[token_accuracy], resampling_unit="sentence",
                sections=[Section("Per tag", [per_label_chart(metrics["per_label"], "Per tag")]),
                          Section("Confusion matrix", confusion_heatmaps(metrics["confusion_matrix"]))])
        gold_spans = [spans(g, self.scheme) for g in gold]
        predicted_spans = [spans(p, self.scheme) for p in predicted]
        matched = [len(set(g) & set(p)) for g, p in zip(gold_spans, predicted_spans)]
        strict = f"strict {self.scheme}"
        default = metrics["default_mode"]
        modes = table("Entity scores in both modes", ["scoring", "precision", "recall", "F1"], [
            [f"{strict} (headline)", metrics["precision"], metrics["recall"], metrics["f1"]],
            ["seqeval default (conlleval-compatible)", default["precision"], default["recall"], default["f1"]]],
            note=f"Strict mode counts only well-formed {self.scheme} entities; the default mode also reads an "
                 f"I-X after O as the start of an entity.")
        counts = [[k.replace("_", " "), metrics[k]] for k in ("token_accuracy", "loss", "num_sentences", "num_tokens",
                                                              "num_gold_entities", "num_predicted_entities")
                  if k in metrics]
        return ReportContent(
            summary=[modes, table("Metrics", ["metric", "value"], counts),
                     per_label_table(metrics["per_type"], "type", f"Per entity type ({strict})"),
                     per_label_table(default["per_type"], "type", "Per entity type (seqeval default mode)")],
            headline=[(f"entity precision ({strict})", "precision"), (f"entity recall ({strict})", "recall"),
                      (f"entity F1 ({strict})", "f1"), ("entity F1 (seqeval default mode)", "default_mode.f1"),
                      ("token accuracy", "token_accuracy")],
            bootstrap=[*micro_prf("", matched, [len(p) for p in predicted_spans], [len(g) for g in gold_spans]),
                       token_accuracy],
            resampling_unit="sentence",
            sections=[
                Section(f"Per entity type ({strict})", [per_label_chart(metrics["per_type"],
                                                                        f"Per entity type ({strict})")]),
                entity_error_section([p["tokens"] for p in predictions], gold_spans, predicted_spans),
            ],
        )

    def label_counts(self, raw: Dataset) -> dict[str, int]:
        """Entities per type (tags per label for plain labels) in a split, for the model card."""
        tagged = [self._model_tags(tags) for tags in column_values(raw, self.settings.label_column)]
        if self.scheme == "none":
            counts = Counter(t for tags in tagged for t in tags)
        else:
            counts = Counter(kind for tags in tagged for _, _, kind in spans(tags, self.scheme))
        return dict(sorted(counts.items()))
