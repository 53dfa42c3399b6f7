"""Masked-LM inputs: packing texts into sequences, and choosing and corrupting the masked tokens.

Pure functions on token ids, unit-tested on their statistics. A sequence carries, beside its
ids, one word number per token (``NOT_A_WORD`` for special tokens): whole-word and span masking
choose whole words through it, and no scheme ever touches a special token.

Schemes (J&M 11.2.1-11.2.2), each with a budget of ``rate`` of the sequence's maskable tokens:
- ``token`` (BERT): ``round(rate * n)`` tokens drawn without replacement;
- ``whole-word``: words in random order, a word taken whole while it fits in the budget
  (BERT's whole-word masking);
- ``span`` (SpanBERT): span lengths in words from a geometric distribution (p=0.2) truncated at
  10 words and renormalised (mean 3.8 words), start word uniform, a span never crossing a
  special token nor overlapping another, until the budget is spent (the last span stops at the
  first word that reaches it).
Each chosen unit (a token, a word, a span) is then replaced as a whole: with probability 0.8
by [MASK], 0.1 by random tokens, 0.1 left unchanged; its tokens are the ones predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
NOT_A_WORD = -1
STRATEGIES = ("token", "whole-word", "span")
MAX_SPAN_TRIES = 100  # draws that find no free place in a row before a span budget is given up


@dataclass(frozen=True)
class MaskingScheme:
    """How the tokens to predict are chosen and corrupted."""

    strategy: str = "token"
    rate: float = 0.15
    mask_share: float = 0.8  # of the chosen units, this share becomes [MASK]
    random_share: float = 0.1  # this share random tokens; the rest is left unchanged
    span_p: float = 0.2
    max_span_words: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"masking: {self.strategy!r} is not known; choose {', '.join(STRATEGIES)}")
        if not 0 < self.rate < 1:
            raise ValueError(f"mask_rate: {self.rate} must be between 0 and 1")
        if self.mask_share < 0 or self.random_share < 0 or self.mask_share + self.random_share > 1:
            raise ValueError(f"mask_share {self.mask_share} and random_share {self.random_share} must be >= 0 "
                             f"and add up to at most 1")
        if not 0 < self.span_p <= 1 or self.max_span_words < 1:
            raise ValueError(f"span_p must be in (0, 1] and max_span_words >= 1 (got {self.span_p}, "
                             f"{self.max_span_words})")

    def span_length_probabilities(self) -> np.ndarray:
        """P(length = 1..max_span_words): the geometric distribution truncated and renormalised."""
        lengths = np.arange(1, self.max_span_words + 1)
        weights = self.span_p * (1 - self.span_p) ** (lengths - 1)
        return weights / weights.sum()


@dataclass
class Masked:
    """One masked sequence: the corrupted ids, the labels (the original id at every predicted
    position, ``IGNORE_INDEX`` elsewhere) and the chosen units as (first, last) token positions."""

    input_ids: list[int]
    labels: list[int]
    units: list[tuple[int, int]]


class RandomTokens:
    """Draws replacement tokens: by unigram frequency (``counts`` per vocabulary id) or
    uniformly over the vocabulary; special tokens are never drawn."""

    def __init__(self, vocab_size: int, special_ids: Sequence[int], counts: np.ndarray | None = None) -> None:
        weights = np.ones(vocab_size, dtype=np.float64) if counts is None else np.asarray(counts, dtype=np.float64).copy()
        if len(weights) != vocab_size:
            raise ValueError(f"unigram counts cover {len(weights)} ids, the vocabulary has {vocab_size}")
        weights[[i for i in special_ids if 0 <= i < vocab_size]] = 0
        if weights.sum() <= 0:
            raise ValueError("no token to draw random replacements from")
        self.cumulative = np.cumsum(weights / weights.sum())

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        picks = np.searchsorted(self.cumulative, rng.random(size), side="right")
        return np.minimum(picks, len(self.cumulative) - 1)


def words_of(word_ids: Sequence[int]) -> list[tuple[int, int]]:
    """The words of a sequence as (first, last) token positions, in order; a word is a run of
    tokens with the same word number."""
    words: list[tuple[int, int]] = []
    for position, word in enumerate(word_ids):
        if word == NOT_A_WORD:
            continue
        if words and word_ids[words[-1][1]] == word and words[-1][1] == position - 1:
            words[-1] = (words[-1][0], position)
        else:
            words.append((position, position))
    return words


def budget(word_ids: Sequence[int], rate: float) -> int:
    """How many tokens a sequence masks: ``rate`` of its maskable tokens, at least one."""
    maskable = sum(1 for w in word_ids if w != NOT_A_WORD)
    return 0 if maskable == 0 else max(1, round(rate * maskable))


def choose_tokens(word_ids: Sequence[int], rate: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    candidates = [i for i, w in enumerate(word_ids) if w != NOT_A_WORD]
    chosen = rng.choice(len(candidates), size=budget(word_ids, rate), replace=False) if candidates else []
    return sorted((candidates[i], candidates[i]) for i in chosen)


def choose_whole_words(word_ids: Sequence[int], rate: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    words = words_of(word_ids)
    limit, total, chosen = budget(word_ids, rate), 0, []
    for index in rng.permutation(len(words)):
        first, last = words[index]
        size = last - first + 1
        if total + size <= limit:
            chosen.append((first, last))
            total += size
        if total == limit:
            break
    if not chosen and words:  # every word is longer than the budget: take one anyway
        chosen.append(words[int(rng.integers(len(words)))])
    return sorted(chosen)


def segments_of(words: list[tuple[int, int]]) -> list[int]:
    """For each word, the number of its segment: words split by a special token differ."""
    segment, out = 0, []
    for k, (first, _) in enumerate(words):
        if k and first != words[k - 1][1] + 1:
            segment += 1
        out.append(segment)
    return out


def choose_spans(word_ids: Sequence[int], scheme: MaskingScheme, rng: np.random.Generator) -> list[tuple[int, int]]:
    """SpanBERT's spans of whole words, as (first, last) token positions."""
    words = words_of(word_ids)
    segment = segments_of(words)
    limit, total = budget(word_ids, scheme.rate), 0
    probabilities = scheme.span_length_probabilities()
    taken = np.zeros(len(words), dtype=bool)
    spans: list[tuple[int, int]] = []
    tries = 0
    while total < limit and tries < MAX_SPAN_TRIES:
        length = int(rng.choice(len(probabilities), p=probabilities)) + 1
        start = int(rng.integers(len(words)))
        end = start + length - 1
        if end >= len(words) or segment[end] != segment[start] or taken[start:end + 1].any():
            tries += 1
            continue
        tries = 0
        last = start
        for k in range(start, end + 1):  # whole words until the budget is reached
            taken[k] = True
            total += words[k][1] - words[k][0] + 1
            last = k
            if total >= limit:
                break
        spans.append((words[start][0], words[last][1]))
    return sorted(spans)


def choose_units(word_ids: Sequence[int], scheme: MaskingScheme, rng: np.random.Generator) -> list[tuple[int, int]]:
    if scheme.strategy == "token":
        return choose_tokens(word_ids, scheme.rate, rng)
    if scheme.strategy == "whole-word":
        return choose_whole_words(word_ids, scheme.rate, rng)
    return choose_spans(word_ids, scheme, rng)


def mask_sequence(input_ids: Sequence[int], word_ids: Sequence[int], scheme: MaskingScheme, mask_token_id: int,
                  random_tokens: RandomTokens, rng: np.random.Generator) -> Masked:
    """Choose the units to predict and corrupt each one as a whole (80/10/10 by default)."""
    ids = list(input_ids)
    labels = [IGNORE_INDEX] * len(ids)
    units = choose_units(word_ids, scheme, rng)
    for first, last in units:
        labels[first:last + 1] = ids[first:last + 1]
        draw = rng.random()
        if draw < scheme.mask_share:
            ids[first:last + 1] = [mask_token_id] * (last - first + 1)
        elif draw < scheme.mask_share + scheme.random_share:
            ids[first:last + 1] = random_tokens.draw(rng, last - first + 1).tolist()
    return Masked(ids, labels, units)


def span_boundaries(units: Sequence[tuple[int, int]], length: int, max_position: int) -> tuple[list[int], list[int], list[int]]:
    """For the span boundary objective: at every position of a unit, the positions just outside
    it (left, right) and the position inside it (0-based, capped at ``max_position``); -1 / 0
    elsewhere. Units never touch the sequence ends, which are special tokens."""
    left, right, inside = [-1] * length, [-1] * length, [0] * length
    for first, last in units:
        for position in range(first, last + 1):
            left[position], right[position] = first - 1, last + 1
            inside[position] = min(position - first, max_position)
    return left, right, inside


# -- packing ---------------------------------------------------------------------------------

@dataclass
class Packed:
    """Sequences built from tokenized texts: ids with [CLS]/[SEP], a word number per token
    (``NOT_A_WORD`` for specials), the text (row) each token came from (-1 for specials) and,
    per sequence, where it starts: (row, token offset in that row), a key that names the
    sequence whatever the batching."""

    input_ids: list[list[int]]
    word_ids: list[list[int]]
    rows: list[list[int]]
    starts: list[tuple[int, int]]


def pack(texts: Sequence[tuple[int, Sequence[int], Sequence[int]]], max_length: int, cls_id: int, sep_id: int,
         across_texts: bool = True) -> Packed:
    """Pack ``(row, token ids, word numbers)`` texts into ``[CLS] ... [SEP]`` sequences of at
    most ``max_length`` tokens. ``across_texts``: texts follow each other, split by [SEP], and a
    text that does not fit continues in the next sequence (no padding waste, no token lost);
    else each text starts a sequence of its own and a long one continues over several. Word
    numbers are made unique within the whole output."""
    capacity = max_length - 2
    if capacity < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside [CLS] and [SEP]")
    out = Packed([], [], [], [])
    ids: list[int] = []
    words: list[int] = []
    rows: list[int] = []
    start: tuple[int, int] | None = None
    word_base = 0

    def flush() -> None:
        nonlocal ids, words, rows, start
        if ids:
            out.input_ids.append([cls_id, *ids, sep_id])
            out.word_ids.append([NOT_A_WORD, *words, NOT_A_WORD])
            out.rows.append([-1, *rows, -1])
            out.starts.append(start)
        ids, words, rows, start = [], [], [], None

    for row, token_ids, word_numbers in texts:
        if not across_texts:
            flush()
        offset = 0
        while offset < len(token_ids):
            room = capacity - len(ids) - (1 if ids else 0)  # a [SEP] goes between two texts
            if room < 1:
                flush()
                continue
            if ids and offset == 0:
                ids.append(sep_id)
                words.append(NOT_A_WORD)
                rows.append(-1)
            if start is None:
                start = (row, offset)
            take = min(room, len(token_ids) - offset)
            ids.extend(token_ids[offset:offset + take])
            words.extend(w if w == NOT_A_WORD else word_base + w for w in word_numbers[offset:offset + take])
            rows.extend([row] * take)
            offset += take
            if len(ids) >= capacity:
                flush()
        word_base += (max(word_numbers) + 1) if len(word_numbers) else 0
    flush()
    return out
