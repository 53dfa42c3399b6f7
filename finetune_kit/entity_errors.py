"""Errors of entity predictions (token classification, span NER), sorted into buckets for the report.

A predicted entity is correct, of the wrong type, with the wrong boundary or spurious; a gold
entity nothing overlaps is missed. ``entity_error_section`` counts them and shows the first few
of each kind of error with the gold and the predicted entities marked in the sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .report_content import Section, bar_chart, marked_tokens, table

ERROR_BUCKETS = ("correct", "wrong type", "wrong boundary", "missed", "spurious")
EXAMPLES_PER_BUCKET = 5


def entity_error_buckets(
    gold: Sequence[tuple[int, int, str]], predicted: Sequence[tuple[int, int, str]]
) -> dict[str, list[Any]]:
    """The entities of one sentence sorted into error buckets.

    Each predicted entity is ``correct`` (same span and type as a gold one), ``wrong type``
    (the span of a gold entity with another type), ``wrong boundary`` (overlapping a gold
    entity without matching its span; the type may differ too) or ``spurious`` (overlapping
    none); each gold entity that no prediction overlaps is ``missed``. So correct + wrong type +
    wrong boundary + spurious = predicted entities. Wrong type and wrong boundary hold
    (predicted, gold) pairs, with the gold entity overlapping most.
    """
    gold_set, buckets = set(gold), {name: [] for name in ERROR_BUCKETS}

    def overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> int:
        return min(a[1], b[1]) - max(a[0], b[0])

    for p in sorted(set(predicted)):
        if p in gold_set:
            buckets["correct"].append(p)
            continue
        same_span = [g for g in sorted(gold_set) if g[:2] == p[:2]]
        overlapping = sorted((g for g in gold_set if overlap(p, g) > 0), key=lambda g: (-overlap(p, g), g))
        if same_span:
            buckets["wrong type"].append((p, same_span[0]))
        elif overlapping:
            buckets["wrong boundary"].append((p, overlapping[0]))
        else:
            buckets["spurious"].append(p)
    buckets["missed"] = [g for g in sorted(gold_set) if not any(overlap(p, g) > 0 for p in predicted)]
    return buckets


def entity_error_section(sentences: Sequence[Sequence[str]], gold: Sequence[Sequence[tuple[int, int, str]]],
                         predicted: Sequence[Sequence[tuple[int, int, str]]]) -> Section:
    """The error buckets of every sentence's entities: counts as a table and a chart, and the
    first few examples of each kind of error."""
    counts = dict.fromkeys(ERROR_BUCKETS, 0)
    examples: dict[str, list[list[Any]]] = {name: [] for name in ERROR_BUCKETS if name != "correct"}
    for k, (tokens, g, p) in enumerate(zip(sentences, gold, predicted)):
        buckets = entity_error_buckets(g, p)
        for name, items in buckets.items():
            counts[name] += len(items)
            if name == "correct":
                continue
            for item in items[: max(0, EXAMPLES_PER_BUCKET - len(examples[name]))]:
                entity = item[0] if isinstance(item[0], tuple) else item
                shown = " ".join(tokens[entity[0]:entity[1]]) + f" ({entity[2]})"
                if isinstance(item[0], tuple):
                    shown += f" vs gold {' '.join(tokens[item[1][0]:item[1][1]])} ({item[1][2]})"
                examples[name].append([name, k + 1, shown, marked_tokens(tokens, g), marked_tokens(tokens, p)])
    rows = [[name, count] for name, count in counts.items()]
    return Section("Error buckets", [
        table("Entities per bucket", ["bucket", "entities"], rows,
              note="Predicted entities are correct, wrong type (a gold span with another type), wrong boundary "
                   "(overlapping a gold entity, not its span) or spurious (overlapping none); gold entities no "
                   "prediction overlaps are missed."),
        bar_chart("Entities per bucket", list(counts), {"entities": list(counts.values())}, ylabel="entities",
                  ylim=None),
        table(f"Examples (up to {EXAMPLES_PER_BUCKET} per kind of error)",
              ["bucket", "sentence", "entity", "gold", "predicted"], [r for rows in examples.values() for r in rows]),
    ])
