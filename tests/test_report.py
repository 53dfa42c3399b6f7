"""Evaluation reports, bootstrap intervals, model cards and ``compare``.

Most tests build reports from hand-made predictions (no model), so every number in report.json
can be checked against figures worked out by hand in the comments; one test trains for two steps
to check what a run and ``evaluate`` write.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from typer.testing import CliRunner

from finetune_kit.cli import app
from finetune_kit.report import ReportSettings, split_report, write_evaluation
from finetune_kit.report_content import report_blocks
from finetune_kit.report_markdown import summary_markdown
from finetune_kit.stats import bootstrap, mean_of, micro_prf
from finetune_kit.task import TaskSettings

runner = CliRunner()
approx = pytest.approx


def numeric_paths(value, path=""):
    """(path, number) of every number in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numeric_paths(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numeric_paths(v, f"{path}/{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def independent_percentile_interval(n, resamples, seed, score):
    """A plain bootstrap: resample indices one resample at a time, score each with ``score``."""
    rng = np.random.default_rng(seed)
    values = [score(rng.integers(0, n, size=n)) for _ in range(resamples)]
    return np.percentile(values, [2.5, 97.5])


# -- classification, by hand ---------------------------------------------------------------------

GOLD = list("aaabbc")
PREDICTED = list("aabbcc")
SCORES = [0.9, 0.8, 0.7, 0.6, 0.95, 0.5]


def classification_case():
    from finetune_kit_tasks.text_classification import TextClassificationTask

    task = TextClassificationTask(TaskSettings())
    task.set_labels(["a", "b", "c"])
    raw = Dataset.from_list([{"text": f"text {i}", "label": g} for i, g in enumerate(GOLD)])
    predictions = [{"label": p, "score": s} for p, s in zip(PREDICTED, SCORES)]
    return task, raw, predictions


def test_classification_report_every_number_by_hand(tmp_path):
    task, raw, predictions = classification_case()
    metrics = task.compute_metrics(predictions, raw)
    settings = ReportSettings(plots=False, bootstrap_resamples=300, seed=7)
    write_evaluation(tmp_path, task, {"test": metrics}, {"task": "text-classification"},
                     {"test": split_report(task, predictions, raw, metrics, settings)}, None, settings)
    report = json.loads((tmp_path / "report.json").read_text())
    part = report["splits"]["test"]
    # a: tp 2, predicted 2, gold 3 -> P 1, R 2/3, F1 4/5; b: tp 1, 2, 2 -> 1/2, 1/2, 1/2;
    # c: tp 1, predicted 2, gold 1 -> 1/2, 1, 2/3. Accuracy 4/6; macro F1 (4/5 + 1/2 + 2/3) / 3 = 59/90;
    # weighted F1 (3 * 4/5 + 2 * 1/2 + 1 * 2/3) / 6 = 61/90; macro P 2/3, macro R 13/18.
    per_label = {"a": [1.0, 2 / 3, 0.8, 3], "b": [0.5, 0.5, 0.5, 2], "c": [0.5, 1.0, 2 / 3, 1]}
    confusion = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    expected_metrics = {
        "accuracy": 4 / 6, "macro_precision": 2 / 3, "macro_recall": 13 / 18, "macro_f1": 59 / 90,
        "weighted_f1": 61 / 90, "num_examples": 6,
        "per_label": {k: dict(zip(["precision", "recall", "f1", "support"], v)) for k, v in per_label.items()},
        "confusion_matrix": {"labels": ["a", "b", "c"], "matrix": confusion},
    }
    assert json.loads(json.dumps(part["metrics"])) == _approx_nested(expected_metrics)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == _approx_nested(expected_metrics)

    headline = {r["key"]: r for r in part["headline"]}
    assert [r["key"] for r in part["headline"]] == ["accuracy", "macro_f1", "weighted_f1"]
    for key, value in (("accuracy", 4 / 6), ("macro_f1", 59 / 90), ("weighted_f1", 61 / 90)):
        assert headline[key]["value"] == approx(value)
        interval = part["intervals"]["metrics"][key]
        assert interval["estimate"] == approx(value)
        assert interval["low"] <= value <= interval["high"]
        assert (headline[key]["low"], headline[key]["high"]) == (interval["low"], interval["high"])
    assert part["intervals"]["resamples"] == 300 and part["intervals"]["seed"] == 7
    assert part["intervals"]["confidence"] == 0.95

    summary = {b["title"]: b for b in part["summary"]}
    assert summary["Metrics"]["rows"] == [["accuracy", approx(4 / 6)], ["macro_f1", approx(59 / 90)],
                                          ["weighted_f1", approx(61 / 90)], ["num_examples", 6]]
    assert summary["Per label"]["rows"] == [[k, *map(approx, v)] for k, v in per_label.items()]
    assert summary["Confusion matrix (rows: gold, columns: predicted)"]["rows"] == [
        [label, *row] for label, row in zip("abc", confusion)]
    sections = {s["title"]: s["blocks"] for s in part["sections"]}
    (bars,) = sections["Per label"]
    assert bars["categories"] == ["a", "b", "c"] and bars["ylim"] == [0, 1]
    assert bars["series"] == {"precision": approx([1, 0.5, 0.5]), "recall": approx([2 / 3, 0.5, 1]),
                              "F1": approx([0.8, 0.5, 2 / 3])}
    counts, shares = sections["Confusion matrix"]
    assert counts["matrix"] == confusion
    assert shares["matrix"] == [approx([2 / 3, 1 / 3, 0]), approx([0, 0.5, 0.5]), approx([0, 0, 1])]
    # wrong: row 5 (b -> c, 0.95) and row 3 (a -> b, 0.7), surest first
    (errors,) = sections["Most confident errors"]
    assert errors["rows"] == [[5, "text 4", "b", "c", 0.95], [3, "text 2", "a", "b", 0.7]]

    checked = ("/metrics/", "/headline/", "/intervals/", "/summary/", "/sections/")
    for path, _ in numeric_paths(part, ""):
        assert path.startswith(checked), path
    assert report["training"] is None


def _approx_nested(expected):
    if isinstance(expected, dict):
        return {k: _approx_nested(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [_approx_nested(v) for v in expected]
    if isinstance(expected, float):
        return approx(expected)
    return expected


def test_classification_intervals_agree_with_an_independent_bootstrap():
    from sklearn.metrics import accuracy_score, f1_score

    task, raw, predictions = classification_case()
    metrics = task.compute_metrics(predictions, raw)
    part = split_report(task, predictions, raw, metrics, ReportSettings(plots=False, bootstrap_resamples=200, seed=3))
    gold, predicted = np.array(GOLD), np.array(PREDICTED)
    scorers = {
        "accuracy": lambda idx: accuracy_score(gold[idx], predicted[idx]),
        "macro_f1": lambda idx: f1_score(gold[idx], predicted[idx], labels=["a", "b", "c"], average="macro",
                                         zero_division=0),
        "weighted_f1": lambda idx: f1_score(gold[idx], predicted[idx], labels=["a", "b", "c"], average="weighted",
                                            zero_division=0),
    }
    for key, score in scorers.items():
        low, high = independent_percentile_interval(len(gold), 200, 3, score)
        interval = part["intervals"]["metrics"][key]
        assert (interval["low"], interval["high"]) == (approx(low), approx(high)), key


def test_bootstrap_is_reproducible_and_depends_on_the_seed():
    values = np.random.default_rng(0).random(50)
    metric = [mean_of("mean", values)]
    first, again, other = bootstrap(metric, 500, seed=1), bootstrap(metric, 500, seed=1), bootstrap(metric, 500, seed=2)
    assert first == again
    assert first["mean"]["estimate"] == approx(values.mean())
    assert first["mean"]["low"] < values.mean() < first["mean"]["high"]
    assert (first["mean"]["low"], first["mean"]["high"]) != (other["mean"]["low"], other["mean"]["high"])
    assert bootstrap(metric, 0, seed=1) == {}


def test_micro_f1_resampled_from_counts_matches_its_definition():
    # sentences: (tp, predicted, gold) = (2, 2, 2), (0, 2, 2), (0, 1, 2): P 2/5, R 2/6, F1 4/11
    estimates = {m.name: m.estimate() for m in micro_prf("", [2, 0, 0], [2, 2, 1], [2, 2, 2])}
    assert estimates == {"precision": approx(0.4), "recall": approx(1 / 3), "f1": approx(4 / 11)}
    assert {m.name: m.estimate() for m in micro_prf("x.", [0], [0], [0])} == {"x.precision": 0, "x.recall": 0,
                                                                             "x.f1": 0}


# -- token classification (entities), by hand ------------------------------------------------------

SENTENCES = [
    (["Peter", "Blackburn", "visited", "Paris"], "B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC"),
    (["John", "lives", "in", "New", "York"], "B-PER O O B-LOC I-LOC", "B-LOC O O B-LOC O"),
    (["Anna", "met", "Bob", "today"], "B-PER O B-PER O", "O O I-PER B-LOC"),
]


def tagging_case():
    from finetune_kit.tagging import label_set
    from finetune_kit_tasks.token_classification import TokenClassificationTask

    task = TokenClassificationTask(TaskSettings(text_column="tokens", label_column="tags"))
    task.scheme = task.source_scheme = "IOB2"
    task.set_labels(label_set(["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], "IOB2"))
    raw = Dataset.from_list([{"tokens": t, "tags": g.split()} for t, g, _ in SENTENCES])
    predictions = [{"tokens": t, "tags": p.split()} for t, _, p in SENTENCES]
    return task, raw, predictions


def test_token_classification_report_every_number_by_hand(tmp_path):
    task, raw, predictions = tagging_case()
    metrics = task.compute_metrics(predictions, raw)
    settings = ReportSettings(plots=False, bootstrap_resamples=300, seed=5)
    write_evaluation(tmp_path, task, {"test": metrics}, {"task": "token-classification"},
                     {"test": split_report(task, predictions, raw, metrics, settings)}, None, settings)
    part = json.loads((tmp_path / "report.json").read_text())["splits"]["test"]
    # Gold entities: (0,2,PER) (3,4,LOC) | (0,1,PER) (3,5,LOC) | (0,1,PER) (2,3,PER): 6.
    # Strict predictions: (0,2,PER) (3,4,LOC) | (0,1,LOC) (3,4,LOC) | (3,4,LOC): 5 (the I-PER after O is
    # no entity in strict IOB2); 2 right: P 2/5, R 2/6, F1 4/11. The default mode reads that I-PER as
    # (2,3,PER), right too: P 3/6, R 3/6. PER strict: 1 predicted, 1 right, 4 gold -> 1, 1/4, 2/5;
    # default 2, 2, 4 -> 1, 1/2, 2/3. LOC both: 4 predicted, 1 right, 2 gold -> 1/4, 1/2, 1/3.
    # Tokens right: 4 + 3 + 1 of 13.
    expected_metrics = {
        "precision": 0.4, "recall": 1 / 3, "f1": 4 / 11, "token_accuracy": 8 / 13, "mode": "strict IOB2",
        "scheme": "IOB2", "num_sentences": 3, "num_tokens": 13, "num_gold_entities": 6, "num_predicted_entities": 5,
        "per_type": {"LOC": {"precision": 0.25, "recall": 0.5, "f1": 1 / 3, "support": 2},
                     "PER": {"precision": 1.0, "recall": 0.25, "f1": 0.4, "support": 4}},
        "default_mode": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "mode": "seqeval default (conlleval-compatible)",
                         "per_type": {"LOC": {"precision": 0.25, "recall": 0.5, "f1": 1 / 3, "support": 2},
                                      "PER": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4}}},
    }
    assert part["metrics"] == _approx_nested(expected_metrics)
    headline = {r["key"]: r for r in part["headline"]}
    assert {k: r["value"] for k, r in headline.items()} == {
        "precision": approx(0.4), "recall": approx(1 / 3), "f1": approx(4 / 11), "default_mode.f1": approx(0.5),
        "token_accuracy": approx(8 / 13)}
    assert "strict IOB2" in headline["f1"]["metric"] and "default" in headline["default_mode.f1"]["metric"]
    for key in ("precision", "recall", "f1", "token_accuracy"):
        interval = part["intervals"]["metrics"][key]
        assert interval["estimate"] == approx(headline[key]["value"])
        assert interval["low"] <= interval["estimate"] <= interval["high"]
    assert "low" not in headline["default_mode.f1"]  # no interval computed for the default mode
    assert part["intervals"]["resampling_unit"] == "sentence"

    modes, counts, strict_table, default_table = part["summary"]
    assert modes["rows"] == [["strict IOB2 (headline)", 0.4, approx(1 / 3), approx(4 / 11)],
                             ["seqeval default (conlleval-compatible)", 0.5, 0.5, 0.5]]
    assert counts["rows"] == [["token accuracy", approx(8 / 13)], ["num sentences", 3], ["num tokens", 13],
                              ["num gold entities", 6], ["num predicted entities", 5]]
    assert strict_table["title"] == "Per entity type (strict IOB2)"
    assert strict_table["rows"] == [["LOC", 0.25, 0.5, approx(1 / 3), 2], ["PER", 1.0, 0.25, 0.4, 4]]
    assert default_table["title"] == "Per entity type (seqeval default mode)"
    assert default_table["rows"] == [["LOC", 0.25, 0.5, approx(1 / 3), 2], ["PER", 1.0, 0.5, approx(2 / 3), 4]]
    sections = {s["title"]: s["blocks"] for s in part["sections"]}
    assert list(sections) == ["Per entity type (strict IOB2)", "Error buckets"]
    (strict_bars,) = sections["Per entity type (strict IOB2)"]
    assert strict_bars["series"] == {"precision": [0.25, 1.0], "recall": [0.5, 0.25], "F1": [approx(1 / 3), 0.4]}
    # Buckets: sentence 1 two correct; sentence 2 John LOC for PER (wrong type), New for New York (wrong
    # boundary); sentence 3 today (spurious), Anna and Bob missed. 2 + 1 + 1 + 1 = 5 predicted.
    counts, bucket_bars, examples = sections["Error buckets"]
    assert counts["rows"] == [["correct", 2], ["wrong type", 1], ["wrong boundary", 1], ["missed", 2],
                              ["spurious", 1]]
    assert bucket_bars["series"] == {"entities": [2, 1, 1, 2, 1]} and bucket_bars["ylim"] is None
    s2_gold = {"text": "John lives in New York", "marks": [[0, 4, "PER"], [14, 22, "LOC"]]}
    s2_pred = {"text": "John lives in New York", "marks": [[0, 4, "LOC"], [14, 17, "LOC"]]}
    s3_gold = {"text": "Anna met Bob today", "marks": [[0, 4, "PER"], [9, 12, "PER"]]}
    s3_pred = {"text": "Anna met Bob today", "marks": [[13, 18, "LOC"]]}
    assert examples["rows"] == [
        ["wrong type", 2, "John (LOC) vs gold John (PER)", s2_gold, s2_pred],
        ["wrong boundary", 2, "New (LOC) vs gold New York (LOC)", s2_gold, s2_pred],
        ["missed", 3, "Anna (PER)", s3_gold, s3_pred],
        ["missed", 3, "Bob (PER)", s3_gold, s3_pred],
        ["spurious", 3, "today (LOC)", s3_gold, s3_pred],
    ]
    for path, _ in numeric_paths(part, ""):
        assert path.startswith(("/metrics/", "/headline/", "/intervals/", "/summary/", "/sections/")), path
    markdown = (tmp_path / "report.md").read_text()
    assert "\\[John\\]PER lives in \\[New York\\]LOC" in markdown
    assert "strict IOB2" in markdown and "seqeval default" in markdown


def test_tagging_intervals_agree_with_an_independent_seqeval_bootstrap():
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    task, raw, predictions = tagging_case()
    metrics = task.compute_metrics(predictions, raw)
    part = split_report(task, predictions, raw, metrics, ReportSettings(plots=False, bootstrap_resamples=200, seed=9))
    gold = [g.split() for _, g, _ in SENTENCES]
    predicted = [p.split() for _, _, p in SENTENCES]

    def strict_f1(idx):
        return f1_score([gold[i] for i in idx], [predicted[i] for i in idx], mode="strict", scheme=IOB2,
                        zero_division=0)

    low, high = independent_percentile_interval(3, 200, 9, strict_f1)
    interval = part["intervals"]["metrics"]["f1"]
    assert (interval["low"], interval["high"]) == (approx(low), approx(high))


# -- span NER and QA ------------------------------------------------------------------------------

def test_span_ner_sections_nested_entities():
    from finetune_kit_tasks.span_ner import SpanNerTask

    task = SpanNerTask(TaskSettings(text_column="tokens", label_column="spans"))
    task.threshold = 0.5
    rows = [{"tokens": ["IL-2", "gene", "expression"],
             "spans": [{"start": 0, "end": 2, "label": "DNA"}, {"start": 0, "end": 1, "label": "protein"}]},
            {"tokens": ["NF-kB", "binds"], "spans": [{"start": 0, "end": 1, "label": "protein"}]}]
    raw = Dataset.from_list(rows)
    # above 0.5: (0,2,DNA) right, (0,1,DNA) the protein's span with another type, (0,2,protein) too wide
    predictions = [{"tokens": rows[0]["tokens"], "candidates": [(0, 2, "DNA", 0.9), (0, 1, "DNA", 0.8),
                                                                 (2, 3, "protein", 0.3)]},
                   {"tokens": rows[1]["tokens"], "candidates": [(0, 2, "protein", 0.7)]}]
    metrics = task.compute_metrics(predictions, raw)
    part = split_report(task, predictions, raw, metrics, ReportSettings(plots=False, bootstrap_resamples=100))
    values = {r["key"]: r["value"] for r in part["headline"]}
    # exact: 1 right of 3 predicted and 3 gold; boundaries: (0,2) and (0,1) right of 3 and 3
    assert values == {"precision": approx(1 / 3), "recall": approx(1 / 3), "f1": approx(1 / 3),
                      "boundary.f1": approx(2 / 3)}
    assert part["intervals"]["metrics"]["boundary.f1"]["estimate"] == approx(2 / 3)
    counts = next(s for s in part["sections"] if s["title"] == "Error buckets")["blocks"][0]
    assert counts["rows"] == [["correct", 1], ["wrong type", 1], ["wrong boundary", 1], ["missed", 0], ["spurious", 0]]


def test_question_answering_sections_by_hand():
    from finetune_kit_tasks.question_answering import QuestionAnsweringTask

    task = QuestionAnsweringTask(TaskSettings(text_column="question", text_pair_column="context",
                                              label_column="answers"))
    task.with_negatives, task.threshold = True, 0.5
    context = "The cat sat on the mat in Paris in 1999."
    rows = [{"id": "q1", "question": "Where did the cat sit?", "answers": {"text": ["on the mat"], "answer_start": [12]}},
            {"id": "q2", "question": "When was it?", "answers": {"text": ["1999"], "answer_start": [35]}},
            {"id": "q3", "question": "Who sat?", "answers": {"text": [], "answer_start": []}},
            {"id": "q4", "question": "What city?", "answers": {"text": ["Paris"], "answer_start": [26]}}]
    raw = Dataset.from_list([{**r, "context": context} for r in rows])

    def prediction(i, span, diff):
        start = context.index(span)
        return {"id": f"q{i}", "answer": span if diff <= 0.5 else "", "best_span": span, "start": start,
                "end": start + len(span), "score": 1.0, "null_score_diff": diff}

    predictions = [prediction(1, "the mat", -1.0), prediction(2, "1999", 2.0), prediction(3, "The cat", 0.0),
                   prediction(4, "Paris", -3.0)]
    metrics = task.compute_metrics(predictions, raw)
    part = split_report(task, predictions, raw, metrics, ReportSettings(plots=False, bootstrap_resamples=100))
    # At 0.5: q1 "the mat" vs "on the mat" (EM 0, F1 2/3), q2 no answer (0, 0), q3 answered (0, 0), q4 (1, 1)
    values = {r["key"]: r["value"] for r in part["headline"]}
    assert values == {"exact_match": 0.25, "f1": approx(5 / 12), "HasAns_exact_match": approx(1 / 3),
                      "HasAns_f1": approx(5 / 9), "NoAns_exact_match": 0.0, "NoAns_f1": 0.0}
    sections = {s["title"]: s["blocks"] for s in part["sections"]}
    assert sections["F1 by answer length"][0]["rows"] == [["1", 2, 0.5, 0.5], ["2", 1, 0.0, approx(2 / 3)],
                                                          ["no answer", 1, 0.0, 0.0]]
    assert sections["F1 by question word"][0]["rows"] == [["what", 1, 1.0, 1.0], ["who", 1, 0.0, 0.0],
                                                          ["when", 1, 0.0, 0.0], ["where", 1, 0.0, approx(2 / 3)]]
    # differences sorted -3, -1, 0, 2: answering none, q4, q4+q1, +q3, all
    (threshold_curve,) = sections["No-answer threshold"]
    assert threshold_curve["series"]["F1"] == {"x": [-4.0, -2.0, -0.5, 1.0, 3.0],
                                               "y": approx([1 / 4, 2 / 4, (1 + 2 / 3 + 1) / 4, (1 + 2 / 3) / 4,
                                                            (1 + 2 / 3 + 1) / 4])}
    assert threshold_curve["markers"][0]["x"] == 0.5
    (wrong,) = sections["Wrong answers"]
    assert [r[:5] for r in wrong["rows"]] == [["q1", "Where did the cat sit?", "the mat", "on the mat", approx(2 / 3)],
                                             ["q2", "When was it?", "(no answer)", "1999", 0.0],
                                             ["q3", "Who sat?", "The cat", "(no answer)", 0.0]]
    assert wrong["rows"][0][5] == {"text": context, "marks": [[12, 22, "gold"], [15, 22, "predicted"]]}


# -- rendering ------------------------------------------------------------------------------------

def test_html_is_self_contained_with_embedded_plots(tmp_path):
    task, raw, predictions = tagging_case()
    metrics = task.compute_metrics(predictions, raw)
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "train", "step": 1, "loss": 2.0, "learning_rate": 1e-4},
        {"event": "train", "step": 2, "loss": 1.5, "learning_rate": 5e-5},
        {"event": "evaluate", "step": 2, "epoch": 1.0, "metrics": {"f1": 0.3, "loss": 1.2}},
        {"event": "train_end", "step": 2, "best_step": 2, "metric_for_best": "f1", "best_metric": 0.3}]))
    settings = ReportSettings(bootstrap_resamples=50)
    out = tmp_path / "report"
    write_evaluation(out, task, {"test": metrics}, {"task": "token-classification"},
                     {"test": split_report(task, predictions, raw, metrics, settings)}, log, settings)
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    report = json.loads((out / "report.json").read_text())
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    charts = [b["plot"] for _, b in report_blocks(report) if "plot" in b]
    assert len(images) == len(charts) == len(plots) and sorted(Path(c).name for c in charts) == plots
    training = {b["title"]: b for b in report["training"]["blocks"]}
    assert training["Training loss"]["series"]["training loss"] == {"x": [1, 2], "y": [2.0, 1.5]}
    assert training["Validation metric per evaluation"]["markers"][0]["x"] == 2
    assert "[</span>John" in page  # entities marked in the sentence


def test_a_split_without_predictions_is_reported_by_its_metrics(tmp_path):
    class PlainTask:
        name = "plain"

    metrics = {"mse": 0.25, "detail": {"n": 4}}
    write_evaluation(tmp_path, PlainTask(), {"test": metrics}, {"task": "plain"},
                     settings=ReportSettings(plots=False))
    part = json.loads((tmp_path / "report.json").read_text())["splits"]["test"]
    assert part["headline"] == [] and part["intervals"] is None and part["sections"] == []
    assert part["summary"][0]["rows"] == [["mse", 0.25], ["detail.n", 4]]
    markdown = (tmp_path / "report.md").read_text()
    assert "## test\n\n**All metrics (as in metrics.json)**\n\n| metric | value |" in markdown


def test_the_summary_shows_once_first_and_is_what_the_console_prints(tmp_path):
    task, raw, predictions = classification_case()
    metrics = task.compute_metrics(predictions, raw)
    settings = ReportSettings(plots=True, bootstrap_resamples=50)
    part = split_report(task, predictions, raw, metrics, settings)
    write_evaluation(tmp_path, task, {"test": metrics}, {"task": "text-classification"}, {"test": part}, None,
                     settings)
    titles = ["Metrics", "Per label", "Confusion matrix (rows: gold, columns: predicted)"]
    assert [b["title"] for b in part["summary"]] == titles
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for title in titles:
        assert markdown.count(f"**{title}**") == 1 and page.count(f"<caption>{title}</caption>") == 1, title
    summary = summary_markdown("test", part)
    assert summary.startswith("## test\n\n**Metrics**\n\n| metric | value |\n|---|---|\n| accuracy | 0.6667 |")
    assert "| a | 2 | 1 | 0 |" in summary and "![" not in summary  # tables only: no plot on a console
    assert markdown.index(summary) < markdown.index("### test: headline metrics")
    assert page.index("<caption>Metrics</caption>") < page.index("<caption>Headline metrics</caption>")
    assert page.count("<details><summary>All metrics") == 1  # the summary does not show every metric


# -- model card ---------------------------------------------------------------------------------

def test_model_card_front_matter_parses_and_is_honest(tmp_path):
    from finetune_kit.model_card import read_front_matter, render_model_card, sha256_of
    from finetune_kit.modeling import Manifest

    task, raw, predictions = classification_case()
    metrics = task.compute_metrics(predictions, raw)
    train = tmp_path / "train.csv"
    train.write_text("text,label\nhello,a\n", encoding="utf-8")
    config = {"train_file": str(train), "learning_rate": 5e-5, "epochs": 3.0, "lora": False, "seed": 42}
    from finetune_kit.model_card import describe_data

    data = describe_data(config, {"train": str(train), "test": "test.csv"}, {"train": 1, "test": 6},
                         {"train": {"a": 1}, "test": task.label_counts(raw)})
    report = {"splits": {"test": split_report(task, predictions, raw, metrics, ReportSettings(plots=False))}}
    manifest = Manifest(task="text-classification", task_state={}, config=config, base_model="org/encoder",
                        versions={})
    card = render_model_card(manifest, data, report, str(tmp_path / "model"), {"test": metrics}, None)
    header = read_front_matter(card)
    assert header["base_model"] == "org/encoder" and header["pipeline_tag"] == "text-classification"
    assert header["library_name"] == "finetune-kit" and "datasets" not in header  # files, not Hub datasets
    assert header["metrics"] == ["accuracy", "macro_f1", "weighted_f1"]
    results = header["model-index"][0]["results"][0]
    assert results["dataset"] == {"name": "test.csv", "type": "test.csv", "split": "test"}
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"accuracy": 0.6667, "macro_f1": 0.6556,
                                                                   "weighted_f1": 0.6778}
    assert sha256_of(train) in card and f"| train | train.csv | 1 | {train.stat().st_size} |" in card
    assert "| b | 2 |" in card  # the test split's label distribution
    interval = report["splits"]["test"]["intervals"]["metrics"]["accuracy"]
    assert f"[{interval['low']:.4f}, {interval['high']:.4f}]" in card
    assert "biases" in card and "It is a finetune-kit model" in card and "fk.load" in card


# -- a real run: train, evaluate, compare ----------------------------------------------------------

def test_train_and_evaluate_write_reports_card_and_compare(tiny_encoder, sentiment_files, tmp_path, capsys):
    import finetune_kit as fk
    from finetune_kit.model_card import read_front_matter

    out = tmp_path / "run"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             validation_file=str(sentiment_files["validation"]), test_file=str(sentiment_files["test"]),
             output_dir=str(out), batch_size=8, max_steps=2, bootstrap_resamples=100)
    printed = capsys.readouterr().err  # the run's messages go to standard error
    for split, part in json.loads((out / "report.json").read_text())["splits"].items():
        assert summary_markdown(split, part) in printed  # each split's summary, after training
    for name in ("report.html", "report.json", "report.md", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    assert list((out / "plots").glob("*.png"))
    report = json.loads((out / "report.json").read_text())
    assert set(report["splits"]) == {"validation", "test"}
    assert report["training"] is not None
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["splits"]["test"]["metrics"] == metrics["test"]
    card = (out / "README.md").read_text()
    header = read_front_matter(card)
    assert "base_model" not in header  # a local path, not a Hub id
    assert header["tags"] == ["finetune-kit", "text-classification"]
    [result] = header["model-index"][0]["results"]  # the test split's (tests/test_model_card.py: the rest)
    assert result["dataset"]["split"] == "test"

    evaluation = tmp_path / "evaluation"
    result = runner.invoke(app, ["evaluate", str(out), "--data", str(sentiment_files["test"]), "--output",
                                 str(evaluation), "--no-plots", "--bootstrap-resamples", "50"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((evaluation / "report.json").read_text())
    assert evaluated["splits"]["test"]["intervals"]["resamples"] == 50
    assert not (evaluation / "plots").exists()
    assert evaluated["training"] is not None  # the model's training log

    result = runner.invoke(app, ["compare", str(out), str(evaluation)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and str(evaluation) in result.output
    accuracy_row = next(line for line in result.output.splitlines() if line.startswith("| test accuracy |"))
    assert accuracy_row.count("[") == 2  # both with their intervals
    assert "| model |" in result.output

    result = runner.invoke(app, ["compare", str(out), str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.json" in result.output


def test_a_scatter_block_keeps_its_shape_and_has_a_table_without_its_image():
    """At most MAX_SCATTER_POINTS points, spread over the x order (the extremes kept); without an
    image the points are binned by x with the mean of y; the PNG renders."""
    import numpy as np

    from finetune_kit.plots import render_png
    from finetune_kit.report_content import MAX_SCATTER_POINTS, chart_as_table, scatter

    x = np.arange(5000, dtype=float)[::-1]
    block = scatter("Gold against predicted", "gold", "predicted", x, 2 * x, diagonal=True)
    assert len(block["x"]) == MAX_SCATTER_POINTS and block["total"] == 5000
    assert block["x"][0] == 0 and block["x"][-1] == 4999 and block["x"] == sorted(block["x"])
    assert all(y == 2 * xv for xv, y in zip(block["x"], block["y"]))
    shown = chart_as_table(block)
    assert len(shown["rows"]) == 10 and sum(row[1] for row in shown["rows"]) == MAX_SCATTER_POINTS
    first_bin = [xv for xv in block["x"][:200]]
    assert shown["rows"][0][2] == pytest.approx(2 * np.mean(first_bin))
    assert render_png(block)[:8] == b"\x89PNG\r\n\x1a\n"
