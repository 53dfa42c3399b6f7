"""Metrics shared by tasks (the loop itself never computes one)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, per-label P/R/F1/support and the confusion matrix.

    ``labels`` fixes the order of the per-label entries and of the matrix rows (gold) and
    columns (predicted). A label that is never predicted has precision 0, as is conventional.
    """
    gold = list(gold)
    predicted = list(predicted)
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(gold, predicted, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(gold, predicted, labels=labels, average="weighted", zero_division=0)
    matrix = confusion_matrix(gold, predicted, labels=labels)
    return {
        "accuracy": float(np.mean([g == q for g, q in zip(gold, predicted)])) if gold else 0.0,
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "weighted_f1": float(weighted[2]),
        "num_examples": len(gold),
        "per_label": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
    }


def entity_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str) -> dict[str, Any]:
    """Word-level tagging metrics with seqeval.

    Entity precision, recall and F1 (micro) and per entity type in strict mode for ``scheme``
    (only well-formed entities count: the headline figures), the same in seqeval's default,
    conlleval-compatible mode (an I-X after O starts an entity) under ``default_mode``, and
    token accuracy. Plain labels (scheme ``none``, e.g. POS tags) get per-label classification
    metrics instead, with ``f1`` the micro F1 (= token accuracy).
    """
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import BILOU, IOB2, IOBES

    from .tagging import bilou_to_bioes, spans

    gold = [list(s) for s in gold]
    predicted = [list(s) for s in predicted]
    for k, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {k}: {len(g)} gold tags but {len(p)} predicted")
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    counts = {"num_sentences": len(gold), "num_tokens": sum(map(len, gold))}
    if scheme == "none":
        flat_gold = [t for s in gold for t in s]
        flat_pred = [t for s in predicted for t in s]
        labels = sorted(set(flat_gold) | set(flat_pred))
        out = classification_metrics(flat_gold, flat_pred, labels)
        return {"precision": out["accuracy"], "recall": out["accuracy"], "f1": out["accuracy"],
                "token_accuracy": out["accuracy"], "scheme": scheme, **counts,
                **{k: out[k] for k in ("macro_f1", "weighted_f1", "per_label", "confusion_matrix")}}

    def scores(gold_seqs: list[list[str]], pred_seqs: list[list[str]], **mode: Any) -> dict[str, Any]:
        with warnings.catch_warnings():  # no entity at all: numpy warns about an empty mean
            warnings.simplefilter("ignore", RuntimeWarning)
            report = classification_report(gold_seqs, pred_seqs, output_dict=True, zero_division=0, **mode)
        micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        per_type = {t: {"precision": float(m["precision"]), "recall": float(m["recall"]),
                        "f1": float(m["f1-score"]), "support": int(m["support"])}
                    for t, m in sorted(report.items()) if not t.endswith(" avg")}
        return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
                "f1": float(micro["f1-score"]), "per_type": per_type}

    seqeval_scheme = {"IOB2": IOB2, "BIOES": IOBES, "BILOU": BILOU}[scheme]
    strict = scores(gold, predicted, mode="strict", scheme=seqeval_scheme)
    counts["num_gold_entities"] = sum(len(spans(s, scheme)) for s in gold)
    counts["num_predicted_entities"] = sum(len(spans(s, scheme)) for s in predicted)
    if scheme == "BILOU":  # the default mode knows E-/S- but not L-/U-, which mean the same
        gold, predicted = [bilou_to_bioes(s) for s in gold], [bilou_to_bioes(s) for s in predicted]
    default = scores(gold, predicted)
    return {
        **{k: strict[k] for k in ("precision", "recall", "f1")},
        "token_accuracy": float(accuracy_score(gold, predicted)) if counts["num_tokens"] else 0.0,
        "mode": f"strict {scheme}",
        "scheme": scheme,
        **counts,
        "per_type": strict["per_type"],
        "default_mode": {**default, "mode": "seqeval default (conlleval-compatible)"},
    }


# -- extractive question answering: the official SQuAD evaluation ----------------------------

def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    import re
    import string

    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


SQUAD_RULES = ("v1.1", "v2.0")


def squad_rules_of(version: Any) -> str | None:
    """The scoring rules a SQuAD file's ``version`` calls for ("1.1" -> v1.1, "v2.0" -> v2.0),
    or None for a version that names neither."""
    major = str(version).strip().lower().lstrip("v").split(".")[0]
    return {"1": "v1.1", "2": "v2.0"}.get(major)


def answer_f1(prediction: str, gold: str, rules: str = "v2.0") -> float:
    """Token-overlap F1 of the normalised answers. When either side is empty: under the v2.0
    rules 1 if both are, else 0; under the v1.1 rules 0 (no token in common)."""
    from collections import Counter

    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if rules == "v2.0" and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(texts: Sequence[str], rules: str = "v2.0") -> list[str]:
    """The answers a prediction is compared with. v2.0 rules: those that normalise to something,
    else [''] (an unanswerable question: only the empty prediction is right). v1.1 rules: all of
    them, so a gold answer such as "." is matched by an empty prediction."""
    if rules == "v1.1":
        return list(texts) or [""]
    kept = [t for t in texts if normalize_answer(t)]
    return kept or [""]


def answer_scores(prediction: str, golds: Sequence[str], rules: str = "v2.0") -> tuple[float, float]:
    """(exact match, F1) of one prediction: the maximum over the gold answers."""
    golds = gold_answers(golds, rules)
    return (float(max(answer_exact_match(prediction, g) for g in golds)),
            max(answer_f1(prediction, g, rules) for g in golds))


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]], rules: str = "v2.0") -> dict[str, Any]:
    """Exact match and F1 (fractions of 1) by the official SQuAD ``rules`` (v1.1 or v2.0), overall
    and, under the v2.0 rules when some questions have no answer, for answerable (HasAns) and
    unanswerable (NoAns) questions separately."""
    if rules not in SQUAD_RULES:
        raise ValueError(f"unknown SQuAD rules {rules!r}; expected one of {', '.join(SQUAD_RULES)}")
    scores = [answer_scores(p, g, rules) for p, g in zip(predictions, golds, strict=True)]
    has_answer = [gold_answers(g) != [""] for g in golds]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    out: dict[str, Any] = {"exact_match": mean([s[0] for s in scores]), "f1": mean([s[1] for s in scores]),
                           "num_questions": len(scores), "squad_rules": rules}
    if rules == "v2.0" and not all(has_answer):
        for name, wanted in (("HasAns", True), ("NoAns", False)):
            subset = [s for s, h in zip(scores, has_answer) if h == wanted]
            out[f"{name}_exact_match"] = mean([s[0] for s in subset])
            out[f"{name}_f1"] = mean([s[1] for s in subset])
            out[f"{name}_total"] = len(subset)
    return out


def null_threshold_curve(
    null_score_diffs: Sequence[float], answer_f1s: Sequence[float], null_f1s: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Mean F1 against the no-answer threshold: one point per distinct outcome, in increasing
    threshold order.

    A question gets no answer when ``null score - best span score > threshold``. For each
    question: the F1 of its best span (``answer_f1s``) and of the empty answer (``null_f1s``).
    Answering exactly the k questions with the smallest differences is what every threshold
    between the k-th and (k+1)-th difference does; the midpoint stands for them (outside the
    range: 1 beyond the extreme difference). Equal differences share their fate.
    """
    diffs = np.asarray(null_score_diffs, dtype=np.float64)
    if len(diffs) == 0:
        return [], []
    order = np.argsort(diffs, kind="stable")
    diffs = diffs[order]
    answered = np.concatenate([[0.0], np.cumsum(np.asarray(answer_f1s, dtype=np.float64)[order])])
    unanswered = np.concatenate([np.cumsum(np.asarray(null_f1s, dtype=np.float64)[order][::-1])[::-1], [0.0]])
    totals = (answered + unanswered) / len(diffs)  # totals[k]: the first k questions answered
    cuts = [k for k in range(len(diffs) + 1) if k in (0, len(diffs)) or diffs[k - 1] < diffs[k]]
    thresholds = [float(diffs[0] - 1.0 if k == 0 else diffs[-1] + 1.0 if k == len(diffs)
                        else (diffs[k - 1] + diffs[k]) / 2) for k in cuts]
    return thresholds, [float(totals[k]) for k in cuts]


def tune_null_threshold(
    null_score_diffs: Sequence[float], answer_f1s: Sequence[float], null_f1s: Sequence[float]
) -> tuple[float, float]:
    """The no-answer threshold that maximises mean F1 (see ``null_threshold_curve``), and that
    F1. Ties in F1 go to the threshold closest to 0."""
    thresholds, f1s = null_threshold_curve(null_score_diffs, answer_f1s, null_f1s)
    if not thresholds:
        return 0.0, 0.0
    best = max(range(len(thresholds)), key=lambda k: (round(f1s[k], 12), -abs(thresholds[k])))
    return thresholds[best], f1s[best]


# -- span NER ---------------------------------------------------------------------------------

def span_metrics(
    gold: Sequence[Sequence[tuple[int, int, str]]], predicted: Sequence[Sequence[tuple[int, int, str]]],
    max_width: int | None = None,
) -> dict[str, Any]:
    """Exact-span metrics on sets of (start, end, type) per sentence, so nested gold counts like
    any other: micro precision/recall/F1, the same per type, and boundaries only (type ignored),
    with counts of gold spans, nested gold spans (inside another gold span) and gold spans wider
    than ``max_width`` (which a span model limited to it can never find)."""
    from .spans import prf, span_counts

    gold_sets = [set(g) for g in gold]
    pred_sets = [set(p) for p in predicted]
    types = sorted({s[2] for g in gold_sets for s in g} | {s[2] for p in pred_sets for s in p})
    per_type = {}
    for kind in types:
        tp, n_pred, n_gold = span_counts([{s for s in g if s[2] == kind} for g in gold_sets],
                                         [{s for s in p if s[2] == kind} for p in pred_sets])
        per_type[kind] = {**prf(tp, n_pred, n_gold), "support": n_gold}
    tp, n_pred, n_gold = span_counts(gold_sets, pred_sets)
    boundary = prf(*span_counts([{s[:2] for s in g} for g in gold_sets], [{s[:2] for s in p} for p in pred_sets]))
    nested = sum(1 for g in gold_sets for s in g
                 if any(o != s and o[0] <= s[0] and s[1] <= o[1] and o[:2] != s[:2] for o in g))
    return {
        **prf(tp, n_pred, n_gold),
        "boundary": boundary,
        "per_type": per_type,
        "num_sentences": len(gold_sets),
        "num_gold": n_gold,
        "num_predicted": n_pred,
        "num_gold_nested": nested,
        "num_gold_too_wide": sum(1 for g in gold_sets for s in g if max_width and s[1] - s[0] > max_width),
    }
