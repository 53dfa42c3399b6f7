"""Words <-> subwords: pure functions that tagging tasks build their features with.

A sentence arrives as words (with one label each) and the encoder reads subwords. These
functions give every word its subwords (never none), cut long sentences into overlapping
windows on word boundaries, choose for each word the window where it has the most context,
and spread word labels over subwords. All of them are unit-tested on hand-written cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .task import TaskError

IGNORE_INDEX = -100  # label of positions that carry no loss (specials, continuation subwords)


def word_pieces(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """The subword ids of every word of every sentence.

    A word the tokenizer turns into no subword at all (a zero-width space, a lone combining
    accent, an empty string) gets the unknown token, so that no word is ever lost.
    """
    unk = tokenizer.unk_token_id
    if unk is None:
        raise ValueError(f"{type(tokenizer).__name__} has no unknown token to stand in for empty words")
    encoded = tokenizer([list(words) for words in sentences], is_split_into_words=True, add_special_tokens=False)
    out: list[list[list[int]]] = []
    for k, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(encoded["input_ids"][k], encoded.word_ids(k)):
            if word is not None:
                pieces[word].append(token_id)
        out.append([p or [unk] for p in pieces])
    return out


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] and [SEP] for BERT)."""
    encoded = tokenizer([["x"]], is_split_into_words=True)
    ids, word_ids = encoded["input_ids"][0], encoded.word_ids(0)
    first = word_ids.index(0)
    last = len(word_ids) - 1 - word_ids[::-1].index(0)
    return list(ids[:first]), list(ids[last + 1 :])


def plan_windows(lengths: Sequence[int], capacity: int, stride: int) -> list[tuple[int, int]]:
    """Cut a sentence into windows of whole words, ``(first word, one past the last)``.

    ``lengths`` are the words' subword counts. A window holds at most ``capacity`` subwords;
    the next window starts so that the two share as many whole words as fit in ``stride``
    subwords, and always at least one word later. A single word longer than ``capacity`` is
    counted as ``capacity`` (the window holds its first subwords; its first one is what is read).
    A sentence that fits gives one window.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    clipped = [min(n, capacity) for n in lengths]
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < len(clipped) and total + clipped[end] <= capacity:
            total += clipped[end]
            end += 1
        windows.append((start, end))
        if end >= len(clipped):
            return windows
        nxt, overlap = end, 0
        while nxt - 1 > start and overlap + clipped[nxt - 1] <= stride:
            nxt -= 1
            overlap += clipped[nxt]
        start = nxt


def best_windows(lengths: Sequence[int], windows: Sequence[tuple[int, int]], capacity: int) -> list[int]:
    """For each word, the window where it has the most context.

    A word's context in a window is the smaller of the subword counts before and after it
    there (BERT's "max context" rule for SQuAD); ties go to the earlier window.
    """
    clipped = [min(n, capacity) for n in lengths]
    owner = [-1] * len(clipped)
    score = [-1] * len(clipped)
    for w, (start, end) in enumerate(windows):
        total = sum(clipped[start:end])
        before = 0
        for i in range(start, end):
            context = min(before, total - before - clipped[i])
            if context > score[i]:
                owner[i], score[i] = w, context
            before += clipped[i]
    return owner


def window_inputs(
    pieces: Sequence[Sequence[int]], window: tuple[int, int], capacity: int,
    prefix: Sequence[int], suffix: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Input ids of one window with the special tokens, and the position of each word's first
    subword in them (one per word of the window, in order)."""
    ids = list(prefix)
    positions: list[int] = []
    for i in range(*window):
        positions.append(len(ids))
        ids.extend(pieces[i][:capacity])
    ids.extend(suffix)
    return ids, positions


def subword_labels(
    word_labels: Sequence[int], lengths: Sequence[int], capacity: int, prefix_len: int, suffix_len: int,
    window: tuple[int, int], continuation: Sequence[int] | None = None,
) -> list[int]:
    """Labels aligned with ``window_inputs``' ids.

    A word's label goes on its first subword. Its other subwords get ``IGNORE_INDEX``
    (``continuation=None``: the ``first`` strategy) or ``continuation[label]`` (the ``all``
    strategy, where that maps B-X to I-X). Special tokens get ``IGNORE_INDEX``.
    """
    labels = [IGNORE_INDEX] * prefix_len
    for i in range(*window):
        rest = min(lengths[i], capacity) - 1
        label = word_labels[i]
        labels.append(label)
        labels.extend([continuation[label] if continuation is not None else IGNORE_INDEX] * rest)
    labels.extend([IGNORE_INDEX] * suffix_len)
    return labels


def char_span_to_tokens(
    offsets: Sequence[tuple[int, int]], in_context: Sequence[bool], start_char: int, end_char: int,
) -> tuple[int, int] | None:
    """Token positions (first, last) that cover the characters ``[start_char, end_char)`` of the
    context, or None when the span is not wholly inside this window's context tokens.

    ``offsets`` are the tokenizer's character offsets; ``in_context`` marks the tokens that are
    context (not question, special or padding).
    """
    positions = [i for i, inside in enumerate(in_context) if inside]
    if not positions:
        return None
    first, last = positions[0], positions[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return None
    start = next(i for i in positions if offsets[i][1] > start_char)
    end = next(i for i in reversed(positions) if offsets[i][0] < end_char)
    return start, end


def sentence_rows(inputs: Iterable[Any], text_column: str, task_name: str) -> list[dict[str, Any]]:
    """Python-API inputs of word-level tasks as raw rows: token lists, strings split on white
    space, or dicts of columns."""
    rows = []
    for item in inputs:
        if isinstance(item, str):
            rows.append({text_column: item.split()})
        elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            rows.append({text_column: list(item)})
        elif isinstance(item, dict):
            rows.append(dict(item))
        else:
            raise TaskError(f"{task_name} predicts from token lists, strings or dicts, not {item!r:.60}")
    return rows
