"""``masked-lm``: continued (domain-adaptive) masked-LM pretraining of an encoder.

Texts (plain text lines, a JSON Lines / CSV column, or lists of words) are tokenized and
packed into ``[CLS] ... [SEP]`` sequences of ``max_length`` tokens, texts split by [SEP]
(``packing=documents``, the default: no padding waste, no token lost) or one text per
sequence (``packing=lines``); a text the tokenizer turns into nothing (only control or
zero-width characters) is left out, with a warning that counts them. Masks are drawn when
batches are made (dynamic masking, see ``finetune_kit.masking``) from a generator seeded by
the run's seed, the epoch and the sequence, so that a resumed or multi-process run draws
exactly the masks of an uninterrupted one; evaluation masks do not depend on the epoch, so the
encoder before training and after it are scored on the very same masked tokens.

The head is, by default (``head=transformers``), the architecture's own transformers MLM head
(``AutoModelForMaskedLM``: BERT's ``cls``, RoBERTa's ``lm_head``...; its decoder tied to the input
embeddings): the output directory loads with ``AutoModelForMaskedLM.from_pretrained``, and
transformers' fill-mask pipeline gives the candidates ``predict`` gives. ``head=finetune-kit`` is
the earlier head, BERT's prediction head in finetune-kit's naming (``lm_head``: dense,
activation, LayerNorm, then the tied input embeddings plus a bias); models saved before the
option existed load with it. Either starts from the checkpoint's own MLM head when it has a BERT-
or RoBERTa-style one. Both compute vocabulary scores only at the predicted positions in training
and evaluation (the transformers head's own forward would score every position: batch x length x
vocabulary floats), see ``score_predicted_positions_only``. With ``-o sbo=true`` (span masking),
SpanBERT's span boundary objective adds a 2-layer FFNN that predicts each masked token from the
vectors just outside its span and a position embedding; its loss is added to the MLM loss. It
lives beside finetune-kit's head, so ``sbo=true`` implies ``head=finetune-kit``.

The output directory is accepted by every task as ``--model`` (its encoder is taken out of it).
``predict`` fills in the ``[MASK]`` tokens of its inputs with the top candidates.

The options (``-o key=value``) are declared in ``MaskedLMTask.task_options`` (``finetune-kit
tasks masked-lm`` lists them).
"""

from __future__ import annotations

import inspect
import math
import re
import types
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForMaskedLM
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from finetune_kit.batching import padded
from finetune_kit.columns import column_values
from finetune_kit.data import LINE_COLUMN, line_numbers, place_of, require_columns, where
from finetune_kit.heads import head_module_names, transformers_model
from finetune_kit.masking import (
    IGNORE_INDEX,
    NOT_A_WORD,
    MaskingScheme,
    RandomTokens,
    mask_sequence,
    pack,
    span_boundaries,
)
from finetune_kit.modeling import resolve_model_path
from finetune_kit.report_content import ReportContent, table
from finetune_kit.stats import Resampled, ratio_of
from finetune_kit.task import (
    ROW_INDEX,
    DataError,
    OutputBatch,
    TaskBase,
    TaskError,
    TaskOption,
    TaskSettings,
)

# Positions inside a span that get their own SBO position embedding; deeper ones share the last.
SBO_POSITIONS = 32
# Where a checkpoint keeps a pretrained MLM head: (dense, norm, bias) name prefixes.
PRETRAINED_HEADS = (
    ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    ("lm_head.dense", "lm_head.norm", "lm_head.bias"),  # a masked-lm model of this toolkit
)
# What ``mask_stream`` says a feature is for: training (masks change every epoch), scoring
# (fixed masks), or filling in the [MASK] tokens the text already has.
TRAIN, SCORE, FILL = 0, 1, 2
# A letter or a digit: a text with one always has a token.
WORD_CHARACTER = re.compile(r"[^\W_]")
# Learning rate of a head that starts from random weights (the checkpoint has none).
NEW_HEAD_LEARNING_RATE = 5e-4
# The MLM heads (``-o head=``): the architecture's own transformers head, or finetune-kit's.
TRANSFORMERS_HEAD, OWN_HEAD = "transformers", "finetune-kit"


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None  # (batch, length): loss of each predicted token, 0 elsewhere
    token_correct: torch.Tensor | None = None  # 1 where the top prediction is the original token
    token_predicted: torch.Tensor | None = None  # 1 at the positions that are predicted
    sbo_loss: torch.Tensor | None = None
    sbo_correct: torch.Tensor | None = None
    fill_ids: torch.Tensor | None = None  # (batch, length, k): top candidates at [MASK] positions
    fill_probabilities: torch.Tensor | None = None


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense -> activation -> LayerNorm -> the input embeddings (tied) + bias."""

    def __init__(self, config: Any, embedding_size: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, embedding_size)
        self.activation = ACT2FN[getattr(config, "hidden_act", "gelu")]
        self.norm = nn.LayerNorm(embedding_size, eps=getattr(config, "layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.norm(self.activation(self.dense(hidden))), embeddings, self.bias)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's span boundary objective: a masked token is predicted from the vectors of the
    tokens just left and right of its span and the embedding of its position in the span,
    through two layers of (linear, GeLU, LayerNorm), then the tied input embeddings + a bias."""

    def __init__(self, config: Any, embedding_size: int, vocab_size: int, positions: int = SBO_POSITIONS) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, getattr(config, "layer_norm_eps", 1e-12)
        self.positions = nn.Embedding(positions, hidden)
        self.layers = nn.Sequential(
            nn.Linear(3 * hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps),
            nn.Linear(hidden, embedding_size), nn.GELU(), nn.LayerNorm(embedding_size, eps=eps),
        )
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        std = getattr(config, "initializer_range", 0.02)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def vectors(self, left: torch.Tensor, right: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """(n, hidden) boundary vectors and (n,) positions -> (n, embedding size) vectors."""
        return self.layers(torch.cat([left, right, self.positions(inside)], dim=-1))

    def forward(self, left: torch.Tensor, right: torch.Tensor, inside: torch.Tensor,
                embeddings: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.vectors(left, right, inside), embeddings, self.bias)


def scatter(values: torch.Tensor, where_: torch.Tensor) -> torch.Tensor:
    """A (batch, length) float tensor holding ``values`` at the True positions of ``where_``."""
    out = torch.zeros(where_.shape, dtype=torch.float32, device=where_.device)
    out[where_] = values.float()
    return out


def encoder_attribute(encoder: nn.Module) -> str:
    """The name the encoder takes in the model: its architecture's own prefix ("bert",
    "roberta"...), so that the saved weights are named as transformers names a pretrained
    checkpoint's and ``AutoModel.from_pretrained(output_dir)`` reads the adapted encoder."""
    prefix = getattr(encoder, "base_model_prefix", "") or ""
    return prefix if prefix.isidentifier() and prefix not in ("lm_head", "span_boundary", "top_k") else "encoder"


def masked_lm_output(scores_at: Any, labels: torch.Tensor) -> MaskedLMOutput:
    """Loss, and per-token loss and correctness, over the predicted positions (labels other than
    IGNORE_INDEX); ``scores_at(predicted)`` gives the (n, vocabulary) scores at those positions."""
    predicted = labels != IGNORE_INDEX
    targets = labels[predicted]
    logits = scores_at(predicted).float()
    token_loss = nn.functional.cross_entropy(logits, targets, reduction="none")
    # A batch without a predicted token still needs a loss that touches the heads.
    loss = token_loss.mean() if len(targets) else logits.sum() * 0.0
    return MaskedLMOutput(loss=loss, token_loss=scatter(token_loss.detach(), predicted),
                          token_correct=scatter((logits.argmax(-1) == targets).detach(), predicted),
                          token_predicted=predicted.float())


def fill_output(scores_at: Any, masks: torch.Tensor, top_k: int) -> MaskedLMOutput:
    """The top-k candidates, with their probabilities, at every [MASK] position."""
    probabilities = scores_at(masks).float().softmax(-1)
    k = min(top_k, probabilities.shape[-1])
    top = probabilities.topk(k, dim=-1)
    ids = torch.zeros((*masks.shape, k), dtype=torch.long, device=masks.device)
    scores = torch.zeros((*masks.shape, k), dtype=torch.float32, device=masks.device)
    ids[masks], scores[masks] = top.indices, top.values
    return MaskedLMOutput(token_predicted=masks.float(), fill_ids=ids, fill_probabilities=scores)


class MaskedLanguageModel(nn.Module):
    def __init__(self, encoder: nn.Module, sbo: bool = False, top_k: int = 5) -> None:
        super().__init__()
        self.encoder_name = encoder_attribute(encoder)
        setattr(self, self.encoder_name, encoder)
        embeddings = encoder.get_input_embeddings().weight
        vocab_size, embedding_size = embeddings.shape
        self.lm_head = MaskedLMHead(encoder.config, embedding_size, vocab_size)
        self.span_boundary = SpanBoundaryHead(encoder.config, embedding_size, vocab_size) if sbo else None
        self.top_k = top_k

    @property
    def encoder(self) -> nn.Module:
        return getattr(self, self.encoder_name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                sbo_left: torch.Tensor | None = None, sbo_right: torch.Tensor | None = None,
                sbo_inside: torch.Tensor | None = None, mask_token_id: torch.Tensor | None = None) -> MaskedLMOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeddings = self.encoder.get_input_embeddings().weight

        def scores_at(where_: torch.Tensor) -> torch.Tensor:
            return self.lm_head(hidden[where_], embeddings)

        if labels is None:
            return fill_output(scores_at, input_ids == mask_token_id.reshape(-1, 1), self.top_k)
        out = masked_lm_output(scores_at, labels)
        loss = out.loss
        predicted = labels != IGNORE_INDEX
        targets = labels[predicted]
        if self.span_boundary is not None and sbo_left is not None:
            rows = predicted.nonzero(as_tuple=True)[0]
            sbo_logits = self.span_boundary(hidden[rows, sbo_left[predicted]], hidden[rows, sbo_right[predicted]],
                                            sbo_inside[predicted], embeddings).float()
            sbo_loss = nn.functional.cross_entropy(sbo_logits, targets, reduction="none")
            loss = loss + (sbo_loss.mean() if len(targets) else sbo_logits.sum() * 0.0)
            out.sbo_loss = scatter(sbo_loss.detach(), predicted)
            out.sbo_correct = scatter((sbo_logits.argmax(-1) == targets).detach(), predicted)
        out.loss = loss
        return out


def position_wise_head(model: nn.Module) -> str | None:
    """The name of a transformers MLM model's head when it is one module that maps hidden vectors
    to vocabulary scores position by position (BERT's ``cls``, RoBERTa's ``lm_head``: one
    argument), so that it can score a few positions alone; None for other heads (several modules,
    or one that needs more than the hidden vectors)."""
    names = head_module_names(model)
    if len(names) != 1:
        return None
    parameters = inspect.signature(getattr(model, names[0]).forward).parameters.values()
    required = [p for p in parameters if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[0] if len(required) == 1 else None


def predicted_positions_forward(self: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                labels: torch.Tensor | None = None,
                                mask_token_id: torch.Tensor | None = None) -> MaskedLMOutput:
    """The forward of a transformers MLM model in this task: the outputs of
    ``MaskedLanguageModel.forward`` (the loss, transformers' own: cross-entropy over the labelled
    positions; per-token figures; the [MASK] candidates), with vocabulary scores computed only at
    the predicted positions when the head allows it (``position_wise_head``)."""
    head = self.fill_head_name
    if head is not None:
        hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        head_module = getattr(self, head)

        def scores_at(where_: torch.Tensor) -> torch.Tensor:
            return head_module(hidden[where_])
    else:  # the class's own forward: scores at every position, the predicted ones picked
        logits = type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask).logits

        def scores_at(where_: torch.Tensor) -> torch.Tensor:
            return logits[where_]
    if labels is None:
        return fill_output(scores_at, input_ids == mask_token_id.reshape(-1, 1), self.fill_top_k)
    return masked_lm_output(scores_at, labels)


def score_predicted_positions_only(model: nn.Module, top_k: int) -> nn.Module:
    """Give a transformers MLM model (``BertForMaskedLM``...) this task's forward.

    The model stays an instance of its transformers class, which is what is saved
    (``save_pretrained``) and what ``AutoModelForMaskedLM`` and the fill-mask pipeline load; only
    this instance's ``forward`` is replaced. transformers' forward scores the whole vocabulary at
    every position, batch x length x vocabulary floats (1 GB for 16 x 512 x 30522), held for the
    backward pass in training and, as an output, copied to the CPU by evaluation; the task needs
    the scores of the masked positions only (about 15% of the tokens)."""
    model.fill_head_name = position_wise_head(model)
    model.fill_top_k = top_k
    model.forward = types.MethodType(predicted_positions_forward, model)
    return model


def head_tensor_names(dense: str, norm: str, bias: str) -> dict[str, str]:
    """This head's parameter names mapped to a checkpoint's, for one ``PRETRAINED_HEADS`` naming."""
    return {"dense.weight": f"{dense}.weight", "dense.bias": f"{dense}.bias", "norm.weight": f"{norm}.weight",
            "norm.bias": f"{norm}.bias", "bias": bias}


def load_pretrained_head(model: nn.Module, name_or_path: str) -> bool:
    """Put the MLM head of a local checkpoint (``pretrained_head_weights``) into a transformers
    MLM model whose head is BERT- or RoBERTa-style; whether it was there and fitted."""
    pretrained = pretrained_head_weights(name_or_path)
    own = model.state_dict()
    for naming in PRETRAINED_HEADS[:2]:  # transformers' names, BERT's and RoBERTa's
        names = head_tensor_names(*naming)
        if pretrained and set(names.values()) <= own.keys() \
                and all(own[names[k]].shape == v.shape for k, v in pretrained.items()):
            model.load_state_dict({names[k]: v for k, v in pretrained.items()}, strict=False)
            return True
    return False


def pretrained_head_weights(name_or_path: str) -> dict[str, torch.Tensor]:
    """The MLM head a local checkpoint carries (BERT or RoBERTa naming), as this head's
    parameters; empty when it has none (e.g. sentence-embedding encoders)."""
    path = Path(resolve_model_path(name_or_path)) / "model.safetensors"
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as weights:
        names = set(weights.keys())
        for naming in PRETRAINED_HEADS:
            wanted = head_tensor_names(*naming)
            if set(wanted.values()) <= names:
                return {mine: weights.get_tensor(theirs) for mine, theirs in wanted.items()}
    return {}


class MaskedLMTask(TaskBase):
    name: ClassVar[str] = "masked-lm"
    description: ClassVar[str] = ("Continued masked-LM pretraining on in-domain text (token, whole-word or "
                                  "SpanBERT span masking, optional span boundary objective)")
    default_metric: ClassVar[str] = "perplexity"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "mlm_loss", "perplexity", "sbo_loss"})
    default_file_format: ClassVar[str] = "text"
    evaluate_before_training: ClassVar[bool] = True
    # The shares and rates are checked together by ``MaskingScheme`` (mask_share + random_share <= 1).
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("masking", "token", "what is masked as a whole: single tokens, whole words, or SpanBERT spans",
                   kind="choice", choices=("token", "whole-word", "span"), shortcut="--masking"),
        TaskOption("mask_rate", 0.15, "the share of maskable tokens predicted, in (0, 1)"),
        TaskOption("mask_share", 0.8, "of the chosen tokens, the share replaced by [MASK] (with random_share, "
                   "at most 1)"),
        TaskOption("random_share", 0.1, "of the chosen tokens, the share replaced by random tokens "
                   "(the rest left as they are)"),
        TaskOption("random_tokens", "uniform", "random tokens drawn uniformly from the vocabulary, or by their "
                   "frequency in the training text", kind="choice", choices=("uniform", "unigram")),
        TaskOption("span_p", 0.2, "span masking: p of the geometric distribution of span lengths, in (0, 1]"),
        TaskOption("max_span_words", 10, "span masking: the longest span, in words", kind="int", minimum=1),
        TaskOption("sbo", False, "add SpanBERT's span boundary objective (needs span masking; implies "
                   "head=finetune-kit)", kind="flag"),
        TaskOption("head", TRANSFORMERS_HEAD, "the MLM head: the architecture's own transformers head (saved as what "
                   "AutoModelForMaskedLM loads) or finetune-kit's earlier one", kind="choice",
                   choices=(TRANSFORMERS_HEAD, OWN_HEAD)),
        TaskOption("packing", "documents", "texts packed into full sequences split by [SEP], or one text per "
                   "sequence", kind="choice", choices=("documents", "lines")),
        TaskOption("top_k", 5, "predict: the candidates given for each [MASK]", kind="int", minimum=1),
    )

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.options = options = self.read_options()
        if options["sbo"] and options["masking"] != "span":
            raise TaskError("task_options.sbo: the span boundary objective needs span masking (--masking span)")
        try:
            self.scheme = MaskingScheme(strategy=options["masking"], rate=float(options["mask_rate"]),
                                        mask_share=float(options["mask_share"]),
                                        random_share=float(options["random_share"]),
                                        span_p=float(options["span_p"]), max_span_words=options["max_span_words"])
        except (TypeError, ValueError) as exc:
            raise TaskError(f"task_options: {exc}") from None
        self.head = self._chosen_head()
        self.head_modules: tuple[str, ...] = ("lm_head", "span_boundary") if options["sbo"] else ("lm_head",)
        self.tokenizer: Any = None
        self.random_tokens: RandomTokens | None = None
        self.unigram_counts: dict[int, int] = {}
        self.epoch = 0
        self.head_pretrained = False
        self.texts_without_tokens: dict[str, int] = {}  # file -> texts left out, having no token

    def _chosen_head(self) -> str:
        """The head asked for; the span boundary objective implies finetune-kit's (it is no part of
        a transformers MLM class), and asking for it with the transformers head is an error."""
        if not self.options["sbo"]:
            return self.options["head"]
        if self.settings.options.get("head") == TRANSFORMERS_HEAD:
            raise TaskError("task_options.sbo: the span boundary objective needs finetune-kit's head; drop "
                            "head=transformers (sbo=true implies head=finetune-kit)")
        return OWN_HEAD

    @property
    def default_head_learning_rate(self) -> float | None:
        """A head that starts random learns at a higher rate than the pretrained encoder."""
        return None if self.head_pretrained else NEW_HEAD_LEARNING_RATE

    # -- setup -------------------------------------------------------------------------------
    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        if "train" not in raw:
            raise TaskError("no training split given")
        self._set_tokenizer(tokenizer)
        for split, ds in raw.items():
            self.validate(ds, split, sources[split])
        if self.options["random_tokens"] == "unigram":
            self.unigram_counts = self._count_tokens(raw["train"])
        self._set_random_tokens()

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        if len(raw) == 0:
            raise DataError(f"{source}: no examples")
        column = self.settings.text_column
        require_columns(raw, [column], source, {column: "--text-column"})
        lines = line_numbers(raw) or [None] * len(raw)
        for line, value in zip(lines, column_values(raw, column)):
            place = where(source, {LINE_COLUMN: line})
            if isinstance(value, list):
                if not all(isinstance(word, str) for word in value):
                    raise DataError(f"{place}: column '{column}' is a list with non-text items")
            elif not isinstance(value, str):
                raise DataError(f"{place}: column '{column}' is not text ({type(value).__name__})")
        if not any(" ".join(v).strip() if isinstance(v, list) else v.strip() for v in column_values(raw, column)):
            raise DataError(f"{source}: every text in column '{column}' is empty; there is nothing to mask")
        if self.tokenizer is not None:
            self._check_tokens(raw, split, source)

    def _check_tokens(self, raw: Dataset, split: str, source: str) -> None:
        """Texts that tokenize to nothing (only control, zero-width or other characters the
        tokenizer drops) are left out of the sequences; a split of nothing else is an error."""
        column = self.settings.text_column
        empty = self._texts_without_tokens(column_values(raw, column))
        if not empty:
            return
        if len(empty) == len(raw):
            raise DataError(f"{source}: every text in column '{column}' is empty to the tokenizer, which drops "
                            f"their characters (control or zero-width ones); there is nothing to mask")
        if split != "predict":
            self.texts_without_tokens[source] = len(empty)
            first = place_of(raw[empty[0]])
            warnings.warn(f"{source}: {len(empty)} text(s) in column '{column}' are empty to the tokenizer (only "
                          f"control, zero-width or other characters it drops) and are left out"
                          + (f" (the first on {first})" if first else ""), stacklevel=3)

    def _texts_without_tokens(self, values: list[Any]) -> list[int]:
        """Positions of the texts that tokenize to nothing. A letter or a digit always makes a
        token, so only texts without one are tokenized here."""
        maybe = [i for i, v in enumerate(values)
                 if not WORD_CHARACTER.search(" ".join(v) if isinstance(v, list) else v)]
        empty = []
        for start in range(0, len(maybe), 1000):
            chunk = maybe[start:start + 1000]
            empty += [i for i, (ids, _) in zip(chunk, self._tokenize([values[i] for i in chunk])) if not ids]
        return empty

    def _set_tokenizer(self, tokenizer: Any) -> None:
        if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise TaskError(f"{self.name}: the tokenizer needs mask, CLS and SEP tokens "
                            f"({type(tokenizer).__name__} lacks one)")
        self.tokenizer = tokenizer

    def _count_tokens(self, raw: Dataset) -> dict[int, int]:
        counts: Counter[int] = Counter()
        for start in range(0, len(raw), 1000):
            for ids, _ in self._tokenize(raw[self.settings.text_column][start:start + 1000]):
                counts.update(ids)
        return dict(counts)

    def _set_random_tokens(self) -> None:
        vocab_size = len(self.tokenizer)
        counts = None
        if self.options["random_tokens"] == "unigram":
            counts = np.zeros(vocab_size)
            for token, count in self.unigram_counts.items():
                counts[token] = count
        self.random_tokens = RandomTokens(vocab_size, self.tokenizer.all_special_ids, counts)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"head_pretrained": self.head_pretrained, "head": self.head}
        if self.texts_without_tokens:
            state["texts_without_tokens"] = self.texts_without_tokens
        if self.unigram_counts:
            state["unigram_counts"] = {str(k): v for k, v in sorted(self.unigram_counts.items())}
        return state

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self._set_tokenizer(tokenizer)
        self.head_pretrained = bool(state.get("head_pretrained", False))
        self.head = state.get("head", OWN_HEAD)  # a model saved before the option had finetune-kit's
        self.unigram_counts = {int(k): int(v) for k, v in state.get("unigram_counts", {}).items()}
        self._set_random_tokens()

    # -- model -------------------------------------------------------------------------------
    def build_model(self, encoder: nn.Module) -> nn.Module:
        checkpoint = getattr(encoder.config, "_name_or_path", "") or ""
        if self.head == TRANSFORMERS_HEAD:
            model = transformers_model(AutoModelForMaskedLM, encoder)
            self.head_modules = head_module_names(model)
            self.head_pretrained = load_pretrained_head(model, checkpoint) or self.head_pretrained
            return score_predicted_positions_only(model, self.options["top_k"])
        model = MaskedLanguageModel(encoder, sbo=self.options["sbo"], top_k=self.options["top_k"])
        self.head_modules = ("lm_head", "span_boundary") if self.options["sbo"] else ("lm_head",)
        pretrained = pretrained_head_weights(checkpoint)
        if pretrained and all(model.lm_head.state_dict()[k].shape == v.shape for k, v in pretrained.items()):
            model.lm_head.load_state_dict(pretrained)
            self.head_pretrained = True
        return model

    # -- features ----------------------------------------------------------------------------
    def _tokenize(self, values: list[Any]) -> list[tuple[list[int], list[int]]]:
        """Token ids and word numbers of each text (no special tokens)."""
        out: list[tuple[list[int], list[int]]] = [([], [])] * len(values)
        for split_words in (False, True):
            picked = [i for i, v in enumerate(values) if isinstance(v, list) == split_words]
            if not picked:
                continue
            encoded = self.tokenizer([values[i] for i in picked], add_special_tokens=False,
                                     is_split_into_words=split_words)
            for k, i in enumerate(picked):
                words = encoded.word_ids(k)
                out[i] = (encoded["input_ids"][k], [NOT_A_WORD if w is None else w for w in words])
        return out

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        tokenized = self._tokenize(batch[self.settings.text_column])
        texts = [(row, ids, words) for row, (ids, words) in zip(batch[ROW_INDEX], tokenized) if ids]
        across = self.options["packing"] == "documents" and split != "predict"
        packed = pack(texts, self.settings.max_length, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id,
                      across_texts=across)
        stream = FILL if split == "predict" else TRAIN if split == "train" else SCORE
        return {
            "input_ids": packed.input_ids,
            "word_ids": packed.word_ids,
            "token_rows": packed.rows,
            "example_index": [row for row, _ in packed.starts],
            "mask_key": [list(start) for start in packed.starts],
            "mask_stream": [stream] * len(packed.input_ids),
        }

    def set_epoch(self, epoch: int) -> None:
        """Training masks change with the epoch (the loop says which one starts)."""
        self.epoch = epoch

    def _generator(self, feature: dict[str, Any]) -> np.random.Generator:
        row, offset = feature["mask_key"]
        if feature["mask_stream"] == TRAIN:
            return np.random.default_rng([self.settings.seed, TRAIN, self.epoch, row, offset])
        return np.random.default_rng([self.settings.seed, SCORE, row, offset])

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.tokenizer is not None and self.random_tokens is not None, "setup() or load_state() first"
        pad = self.tokenizer.pad_token_id or 0
        attention = padded([[1] * len(f["input_ids"]) for f in features], 0)
        if features[0]["mask_stream"] == FILL:
            return {"input_ids": padded([f["input_ids"] for f in features], pad), "attention_mask": attention,
                    "mask_token_id": torch.tensor(self.tokenizer.mask_token_id)}
        masked = [mask_sequence(f["input_ids"], f["word_ids"], self.scheme, self.tokenizer.mask_token_id,
                                self.random_tokens, self._generator(f)) for f in features]
        batch = {"input_ids": padded([m.input_ids for m in masked], pad), "attention_mask": attention,
                 "labels": padded([m.labels for m in masked], IGNORE_INDEX)}
        if self.options["sbo"]:
            boundaries = [span_boundaries(m.units, len(m.input_ids), SBO_POSITIONS - 1) for m in masked]
            for k, name in enumerate(("sbo_left", "sbo_right", "sbo_inside")):
                # -1 (outside every span) becomes 0: only predicted positions are read
                batch[name] = padded([b[k] for b in boundaries], 0).clamp(min=0)
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        rows = []
        for item in inputs:
            if isinstance(item, (str, list)):
                rows.append({self.settings.text_column: item})
            elif isinstance(item, dict):
                rows.append(dict(item))
            else:
                raise TaskError(f"{self.name} reads strings, lists of words or dicts, not {type(item).__name__}")
        return rows

    # -- outputs -----------------------------------------------------------------------------
    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        token_rows = features["token_rows"]
        if len(features) and features[0]["mask_stream"] == FILL:
            return self._fills(raw, features, token_rows, outputs)
        columns = ("token_predicted", "token_loss", "token_correct", "sbo_loss", "sbo_correct")
        sums = np.zeros((len(raw), len(columns)))  # per text: predicted tokens, then sums over them
        for indices, arrays in outputs:
            present = [c for c in columns if c in arrays]
            for k, feature in enumerate(indices):
                rows = np.asarray(token_rows[feature])
                predicted = arrays["token_predicted"][k, :len(rows)] > 0
                values = np.stack([arrays[c][k, :len(rows)][predicted] for c in present], axis=1)
                np.add.at(sums[:, :len(present)], rows[predicted], values)
        out = []
        for predicted, loss, correct, sbo_loss, sbo_correct in sums:
            row = {"masked_tokens": int(predicted), "loss_sum": float(loss), "correct": int(correct)}
            if self.options["sbo"]:
                row.update(sbo_loss_sum=float(sbo_loss), sbo_correct=int(sbo_correct))
            out.append(row)
        return out

    def _fills(self, raw: Dataset, features: Dataset, token_rows: list[list[int]],
               outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        """For each text, the candidates of its [MASK] tokens, in text order."""
        found: list[list[tuple[int, int, list[dict[str, Any]]]]] = [[] for _ in range(len(raw))]
        for indices, arrays in outputs:
            for k, feature in enumerate(indices):
                rows = token_rows[feature]
                for position in np.flatnonzero(arrays["token_predicted"][k, :len(rows)] > 0):
                    candidates = [{"token": self.tokenizer.convert_ids_to_tokens(int(t)), "score": float(p)}
                                  for t, p in zip(arrays["fill_ids"][k, position], arrays["fill_probabilities"][k, position])]
                    found[rows[position]].append((int(feature), int(position), candidates))
        return [{"masks": [c for _, _, c in sorted(items, key=lambda x: x[:2])]} for items in found]

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        total = sum(p["masked_tokens"] for p in predictions)
        if total == 0:
            raise DataError(f"{self.name}: no token of this split could be masked (are its texts empty?)")
        loss = sum(p["loss_sum"] for p in predictions) / total
        metrics: dict[str, Any] = {
            "mlm_loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "accuracy": sum(p["correct"] for p in predictions) / total,
            "masked_tokens": total, "num_texts": len(predictions),
        }
        if self.options["sbo"]:
            metrics["sbo_loss"] = sum(p["sbo_loss_sum"] for p in predictions) / total
            metrics["sbo_accuracy"] = sum(p["sbo_correct"] for p in predictions) / total
        return metrics

    def report(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> ReportContent:
        """Masked-token accuracy, loss and perplexity with intervals (texts resampled), and the
        same figures of the encoder before training beside them."""
        counts = [p["masked_tokens"] for p in predictions]
        losses = [p["loss_sum"] for p in predictions]
        loss = ratio_of("mlm_loss", losses, counts)
        statistics = [ratio_of("accuracy", [p["correct"] for p in predictions], counts), loss,
                      Resampled("perplexity", loss.columns,
                                lambda s: np.exp(np.minimum(s[..., 0] / np.maximum(s[..., 1], 1), 700.0)))]
        headline = [("masked-token accuracy", "accuracy"), ("masked-token loss", "mlm_loss"),
                    ("perplexity", "perplexity")]
        keys = [k for k in ("accuracy", "mlm_loss", "perplexity", "sbo_accuracy", "sbo_loss", "masked_tokens",
                            "num_texts") if k in metrics]
        before = metrics.get("before_training")
        if before:
            scores = ("accuracy", "mlm_loss", "perplexity", "sbo_accuracy", "sbo_loss")
            summary = table(
                "Before and after training: the starting encoder and the trained one, on the same masked tokens",
                ["metric", "before training", "after training", "change"],
                [[k, before.get(k), metrics[k], metrics[k] - before[k] if k in scores and k in before else None]
                 for k in keys],
                note=None if self.head_pretrained else
                "The starting checkpoint has no MLM head: 'before training' is scored with a newly initialised head.")
        else:
            summary = table("Metrics", ["metric", "value"], [[k, metrics[k]] for k in keys])
        return ReportContent(summary=[summary], headline=headline, bootstrap=statistics, resampling_unit="text")
