"""Entity spans: enumeration, decoding scored spans into entities (nested or flat), and the
threshold that maximises F1. Spans are ``(start, end, label)`` over words, end exclusive.
Pure functions, unit-tested on constructed tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .tagging import TagError, check_tag, iob1_to_iob2, spans
from .task import DataError

Span = tuple[int, int, str]
LAYOUTS = ("spans", "genia", "tags")


def layout_of(values: Iterable[Any]) -> str:
    """How a column holds entities: ``spans`` ({"start", "end", "label"}), ``genia`` ({"index":
    [...], "type"}) or ``tags`` (a BIO tag per word), read off its first non-empty value."""
    first = next((v for v in values if v), None)
    if first is not None and isinstance(first[0], str):
        return "tags"
    if first is not None and isinstance(first[0], dict) and "index" in first[0]:
        return "genia"
    return "spans"


def read_spans(value: Any, num_words: int, layout: str, here: str, tag_scheme: str = "IOB2") -> list[Span]:
    """A sentence's entities as (start, end exclusive, type) from any layout; a malformed span
    (out of the sentence, empty, end <= start, no label, not contiguous) is a ``DataError``
    that starts with ``here`` (the file and line)."""
    value = value or []
    if layout == "tags":
        if len(value) != num_words:
            raise DataError(f"{here}: {num_words} tokens but {len(value)} tags")
        tags = [str(t) for t in value]
        try:
            for tag in tags:
                check_tag(tag, tag_scheme)
        except TagError as exc:
            raise DataError(f"{here}: {exc}") from None
        if tag_scheme in ("IOB1", "IOB2"):
            return spans(iob1_to_iob2(tags), "IOB2")
        return spans(tags, tag_scheme)
    out = []
    for k, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{here}: span {k + 1} is not an object")
        if layout == "genia":
            index, label = item.get("index"), item.get("type")
            if not isinstance(index, list) or not index or not all(isinstance(i, int) for i in index):
                raise DataError(f"{here}: span {k + 1} has no word indices")
            if index != list(range(index[0], index[0] + len(index))):
                raise DataError(f"{here}: span {k + 1} ({index}) is not contiguous; discontinuous entities "
                                f"are not supported")
            start, end = index[0], index[-1] + 1
        else:
            start, end, label = item.get("start"), item.get("end"), item.get("label")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise DataError(f"{here}: span {k + 1} (start {_shown(start)}, end {_shown(end)}): start and end "
                            f"must be whole numbers (word indices, end exclusive)")
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{here}: span {k + 1} ({start}, {end}) has no label")
        if end <= start:
            raise DataError(f"{here}: span {k + 1} ({start}, {end}) is empty: end must be greater than start")
        if start < 0 or end > num_words:
            raise DataError(f"{here}: span {k + 1} ({start}, {end}) is outside the sentence's {num_words} words")
        out.append((start, end, label))
    return out


def _shown(value: Any) -> str:
    """A span field as the JSON file writes it ("0", 1.5, true, null)."""
    import json

    return json.dumps(value, ensure_ascii=False)


def outermost(entities: Iterable[Span]) -> list[Span]:
    """The entities no other one contains, longest first where two cross: what a flat (BIO)
    annotation of nested data can hold."""
    kept: list[Span] = []
    for span in sorted(set(entities), key=lambda s: (-(s[1] - s[0]), s[0], s[2])):
        if not any(overlaps(span[:2], k[:2]) for k in kept):
            kept.append(span)
    return sorted(kept)


def candidate_spans(num_words: int, max_width: int) -> list[tuple[int, int]]:
    """Every (start, end) with 1 <= end - start <= max_width: sum over widths w of (n - w + 1)."""
    return [(i, i + w) for i in range(num_words) for w in range(1, max_width + 1) if i + w <= num_words]


def crosses(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Two spans overlap without one containing the other."""
    return a[0] < b[0] < a[1] < b[1] or b[0] < a[0] < b[1] < a[1]


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def decode(scored: Iterable[tuple[int, int, str, float]], threshold: float | dict[str, float],
           mode: str = "nested") -> list[tuple[int, int, str, float]]:
    """Entities from scored spans ``(start, end, label, probability)``.

    A span is kept when its probability beats the threshold (one for all labels, or one per
    label); then, greedily from the most probable: ``nested`` keeps a span unless it crosses a
    kept one (nesting is allowed, partial overlap is not), ``flat`` unless it overlaps one.
    """
    def limit(label: str) -> float:
        return threshold.get(label, 0.5) if isinstance(threshold, dict) else threshold

    conflict = crosses if mode == "nested" else overlaps
    kept: list[tuple[int, int, str, float]] = []
    for span in sorted((s for s in scored if s[3] > limit(s[2])), key=lambda s: (-s[3], s[0], s[1])):
        if not any(conflict(span[:2], k[:2]) for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: (s[0], s[1]))


def span_counts(gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]]) -> tuple[int, int, int]:
    """(true positives, predicted, gold) over sentences, exact (start, end, label) matches."""
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, predicted, strict=True):
        g, p = set(g), set(p)
        tp += len(g & p)
        n_pred += len(p)
        n_gold += len(g)
    return tp, n_pred, n_gold


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def f1_by_threshold(scored: Sequence[Sequence[tuple[int, int, str, float]]], gold: Sequence[set[Span]],
                    grid: Sequence[float], mode: str = "nested") -> list[float]:
    """Micro F1 of the spans ``decode`` keeps at each threshold of ``grid`` (one for all labels),
    from one decoding per sentence. The greedy pass takes spans most probable first, so the spans
    above a threshold are a prefix of the spans above a lower one and meet the same decisions: what
    is kept at a threshold is what is kept at the lowest whose probability beats it."""
    lowest = min(grid)
    probabilities: list[float] = []  # per distinct kept (start, end, label) of a sentence: its highest probability
    in_gold: list[bool] = []
    for sentence, sentence_gold in zip(scored, gold, strict=True):
        kept: dict[Span, float] = {}
        for start, end, label, p in decode(sentence, lowest, mode):
            kept[(start, end, label)] = max(p, kept.get((start, end, label), p))
        probabilities.extend(kept.values())
        in_gold.extend(span in sentence_gold for span in kept)
    p, correct = np.asarray(probabilities, dtype=np.float64), np.asarray(in_gold, dtype=bool)
    n_gold = sum(len(g) for g in gold)
    return [prf(int((correct & (p > t)).sum()), int((p > t).sum()), n_gold)["f1"] for t in grid]


def calibrate_threshold(
    scored: Sequence[Sequence[tuple[int, int, str, float]]], gold: Sequence[Iterable[Span]], mode: str = "nested",
    per_label: bool = False, grid: Sequence[float] | None = None,
) -> tuple[float | dict[str, float], float]:
    """The threshold (or per-label thresholds) on a grid that maximises micro F1 of the decoded
    spans against ``gold``, and that F1. Ties go to the threshold nearest 0.5.

    Per label, each label's threshold is tuned in turn (the others held at the global best),
    twice round: decoding couples labels through overlaps, so the result is a local optimum.
    """
    grid = list(grid) if grid is not None else [round(x, 2) for x in np.arange(0.05, 0.96, 0.01)]
    gold = [set(g) for g in gold]

    def f1_at(threshold: float | dict[str, float]) -> float:
        decoded = [[s[:3] for s in decode(sentence, threshold, mode)] for sentence in scored]
        return prf(*span_counts(gold, decoded))["f1"]

    def pick(options: list[float | dict[str, float]], keys: list[float],
             scores: list[float]) -> tuple[float | dict[str, float], float]:
        best = max(range(len(options)), key=lambda i: (round(scores[i], 12), -abs(keys[i] - 0.5)))
        return options[best], scores[best]

    def best_of(options: list[float | dict[str, float]], keys: list[float]) -> tuple[float | dict[str, float], float]:
        return pick(options, keys, [f1_at(o) for o in options])

    threshold, f1 = pick(list(grid), list(grid), f1_by_threshold(scored, gold, grid, mode))
    if not per_label:
        return threshold, f1
    labels = sorted({s[2] for sentence in scored for s in sentence} | {s[2] for g in gold for s in g})
    current: dict[str, float] = {label: threshold for label in labels}  # type: ignore[misc]
    for _ in range(2):
        for label in labels:
            options = [{**current, label: t} for t in grid]
            current, f1 = best_of(options, list(grid))  # type: ignore[assignment]
    return current, f1
