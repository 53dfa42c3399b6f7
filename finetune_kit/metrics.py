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
