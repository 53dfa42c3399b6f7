"""The regression task: one or several numbers per text or text pair, its metrics and their
intervals, the sigmoid option, saving as transformers does, LoRA, resume, two processes, bad input.

Three tiny models are trained once for the module (a single-text one from CSV, a pair one with
``sigmoid`` through the CLI, a two-target LoRA one from JSON Lines) and most tests read them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from finetune_kit_tasks.regression import (
    RegressionTask,
    bootstrap_statistics,
    regression_metrics,
)
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app
from finetune_kit.data import read_file
from finetune_kit.inference import prepare_features
from finetune_kit.modeling import load_pretrained_encoder
from finetune_kit.registry import get_task_class
from finetune_kit.task import ROW_INDEX, TaskError, TaskSettings, greater_is_better
from tests.conftest import NEGATIVE, POSITIVE, SHARED_DATA, one_torch_thread, write_csv, write_jsonl
from tests.launched import two_process_run
from tests.test_distributed import (
    assert_same_metrics,
    log_records,
    validation_metrics,
)

TEXTS = POSITIVE + NEGATIVE
# Positive texts score 4-5, negative ones 0-1, in half steps (ties included).
SCORES = [4.0 + (i % 3) / 2 for i in range(len(POSITIVE))] + [(i % 3) / 2 for i in range(len(NEGATIVE))]
PAIRS = [("the cat sat on the mat", "the cat sat", 3.8), ("the dog ran in the park", "the cat sat", 0.4),
         ("a man made a film", "a film was made", 4.6), ("she went to work", "the dog ran", 0.0),
         ('the old man saw the dog "', "a man saw a dog", 3.2), ("a woman and her cat", "the park", 0.2)]
QUIET = {"report_plots": False, "bootstrap_resamples": 0}


one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)  # bit-identical resumes


def manifest(out: Path) -> dict:
    return json.loads((out / "finetune_kit.json").read_text(encoding="utf-8"))


# -- the trained models ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single(tiny_encoder, tmp_path_factory):
    """Single texts from CSV, targets in column ``score``: 12 steps, an evaluation and a checkpoint
    every 2 steps (the last two kept), the best picked by the default metric."""
    root = tmp_path_factory.mktemp("single")
    rows = [{"text": t, "score": s} for t, s in zip(TEXTS, SCORES)]
    files = {"train": write_csv(root / "train.csv", rows * 2), "validation": write_csv(root / "dev.csv", rows),
             "test": write_csv(root / "test.csv", rows[::-1])}
    settings = {"task": "regression", "model": tiny_encoder, "train_file": str(files["train"]),
                "validation_file": str(files["validation"]), "test_file": str(files["test"]),
                "label_column": "score", "epochs": 3, "batch_size": 8, "learning_rate": 3e-3,
                "head_learning_rate": 3e-2, "max_length": 32, "eval_steps": 2, "save_steps": 2,
                "save_total_limit": 2, "bootstrap_resamples": 200}
    result = fk.train(output_dir=str(root / "out"), **settings)
    return SimpleNamespace(files=files, out=root / "out", result=result, settings=settings)


@pytest.fixture(scope="module")
def pairs(tiny_encoder, tmp_path_factory):
    """Sentence pairs in GLUE TSV form (STS-B's columns), ``sigmoid=true`` on a 0-5 range, through the CLI."""
    root = tmp_path_factory.mktemp("pairs")
    lines = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{s:.3f}" for a, b, s in PAIRS]
    train, dev = root / "train.tsv", root / "dev.tsv"
    train.write_text("\n".join(lines + lines[1:] * 2) + "\n", encoding="utf-8")
    dev.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "out"
    result = CliRunner().invoke(app, [
        "train", "--task", "regression", "--model", tiny_encoder, "--train", str(train), "--validation", str(dev),
        "--output", str(out), "--text-column", "sentence1", "--text-pair-column", "sentence2", "--label-column",
        "score", "--max-steps", "8", "--batch-size", "6", "--learning-rate", "3e-3", "--max-length", "32",
        "-o", "sigmoid=true", "-o", "target_range=0,5", "report_plots=false", "bootstrap_resamples=0"])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(train=train, dev=dev, out=out)


@pytest.fixture(scope="module")
def two_targets(tiny_encoder, tmp_path_factory):
    """Two targets as a JSON list in the label column (a score and the number of words), LoRA,
    ``sigmoid`` on each target's training range, the best checkpoint by the lowest ``mse``."""
    root = tmp_path_factory.mktemp("two-targets")
    rows = [{"text": t, "label": [s, float(len(t.split()))]} for t, s in zip(TEXTS, SCORES)]
    train, dev = write_jsonl(root / "train.jsonl", rows * 2), write_jsonl(root / "dev.jsonl", rows)
    result = fk.train(task="regression", model=tiny_encoder, train_file=str(train), validation_file=str(dev),
                      output_dir=str(root / "out"), lora=True, epochs=2, batch_size=8, learning_rate=1e-2,
                      max_length=32, eval_steps=1, metric_for_best="mse", task_options={"sigmoid": True}, **QUIET)
    return SimpleNamespace(train=train, dev=dev, out=root / "out", result=result, rows=rows)


# -- metrics and their intervals, by hand ----------------------------------------------------------

def test_metrics_on_a_hand_case_with_ties():
    gold = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    predicted = np.array([1.5, 2.0, 1.0, 4.0, 4.0])
    # average ranks worked out by hand: gold's two 2s share ranks 2 and 3, the predicted 4s ranks 4 and 5
    gold_ranks, predicted_ranks = [1, 2.5, 2.5, 4, 5], [2, 3, 1, 4.5, 4.5]
    metrics = regression_metrics(gold[:, None], predicted[:, None], ["y"])
    assert metrics["pearson"] == pytest.approx(np.corrcoef(gold, predicted)[0, 1], abs=1e-12)
    assert metrics["spearman"] == pytest.approx(np.corrcoef(gold_ranks, predicted_ranks)[0, 1], abs=1e-12)
    assert metrics["mse"] == pytest.approx((0.25 + 0 + 1 + 1 + 1) / 5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(3.25 / 5))
    assert metrics["mae"] == pytest.approx((0.5 + 0 + 1 + 1 + 1) / 5)
    assert metrics["num_examples"] == 5 and "per_target" not in metrics
    # a constant side has no correlation: 0, not NaN
    assert regression_metrics(gold[:, None], np.full((5, 1), 2.0), ["y"])["pearson"] == 0.0


def test_several_targets_have_their_own_metrics_and_the_means():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(40, 2))
    predicted = gold + rng.normal(scale=[0.3, 1.0], size=(40, 2))
    metrics = regression_metrics(gold, predicted, ["a", "b"])
    for k, name in enumerate("ab"):
        errors = predicted[:, k] - gold[:, k]
        assert metrics["per_target"][name]["pearson"] == pytest.approx(np.corrcoef(gold[:, k], predicted[:, k])[0, 1])
        assert metrics["per_target"][name]["mse"] == pytest.approx(np.mean(errors**2))
        assert metrics["per_target"][name]["mae"] == pytest.approx(np.mean(np.abs(errors)))
    for metric in ("pearson", "spearman", "mse", "rmse", "mae"):
        assert metrics[metric] == pytest.approx(np.mean([metrics["per_target"][t][metric] for t in "ab"]))


@pytest.mark.parametrize("targets", [1, 2])
def test_the_bootstrap_statistics_reproduce_the_metrics_and_resample_pearson_exactly(targets):
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, size=(30, targets)).astype(float)  # ties, as in STS-B
    predicted = gold + rng.normal(size=(30, targets))
    metrics = regression_metrics(gold, predicted, [f"t{k}" for k in range(targets)])
    statistics = {s.name: s for s in bootstrap_statistics(gold, predicted)}
    assert set(statistics) == {"pearson", "spearman", "mse", "rmse", "mae"}
    for name, statistic in statistics.items():
        assert statistic.estimate() == pytest.approx(metrics[name], abs=1e-9), name
    # one resample, drawn as counts per example: Pearson, MSE and MAE are those of the repeated rows
    counts = rng.multinomial(30, np.full(30, 1 / 30))
    drawn_gold, drawn_predicted = np.repeat(gold, counts, axis=0), np.repeat(predicted, counts, axis=0)
    redrawn = regression_metrics(drawn_gold, drawn_predicted, [f"t{k}" for k in range(targets)])
    for name in ("pearson", "mse", "rmse", "mae"):
        assert float(statistics[name].formula(counts @ statistics[name].columns)) == pytest.approx(redrawn[name])
    # Spearman's resamples keep the full sample's average ranks (the documented approximation)
    from scipy.stats import rankdata

    kept_ranks = np.mean([np.corrcoef(np.repeat(rankdata(gold[:, k]), counts),
                                      np.repeat(rankdata(predicted[:, k]), counts))[0, 1] for k in range(targets)])
    assert float(statistics["spearman"].formula(counts @ statistics["spearman"].columns)) == pytest.approx(kept_ranks)


def test_the_task_declares_its_metric_directions():
    task = get_task_class("regression")
    assert task is RegressionTask and task.default_metric == "spearman"
    assert [greater_is_better(task, m) for m in ("loss", "mse", "rmse", "mae", "pearson", "spearman")] == \
        [False, False, False, False, True, True]
    assert task.pipeline_tag == "text-classification"


# -- single texts ---------------------------------------------------------------------------------

def test_single_text_model_state_predictions_and_metrics(single):
    state = manifest(single.out)["task_state"]
    assert state == {"targets": ["score"], "target_columns": None, "pairs": False, "sigmoid": False,
                     "target_range": None}
    predictor = fk.load(single.out)
    predictions = predictor.predict(TEXTS)
    assert all(set(p) == {"value"} and isinstance(p["value"], float) for p in predictions)
    assert len({round(p["value"], 6) for p in predictions}) > 1  # not a constant
    # the saved metrics are those of these predictions, recomputed here with numpy
    predicted, gold = np.array([p["value"] for p in predictions]), np.array(SCORES)
    validation = single.result.metrics["validation"]
    assert validation["pearson"] == pytest.approx(np.corrcoef(gold, predicted)[0, 1], abs=1e-5)
    assert validation["mse"] == pytest.approx(np.mean((predicted - gold) ** 2), abs=1e-5)
    assert validation["mae"] == pytest.approx(np.mean(np.abs(predicted - gold)), abs=1e-5)
    assert validation["num_examples"] == len(TEXTS)
    # the loss is transformers' own: the mean squared error (one evaluation batch)
    assert validation["loss"] == pytest.approx(validation["mse"], rel=1e-4)
    with pytest.raises(TaskError, match="regression predicts from strings or dicts"):
        predictor.predict([("a pair", "of texts")])


def test_the_default_best_checkpoint_is_the_highest_spearman(single):
    log = log_records(single.out)
    evaluations = [r for r in log if r["event"] == "evaluate"]
    spearman = [r["metrics"]["spearman"] for r in evaluations]
    assert len(evaluations) == 6 and len(set(spearman)) > 1
    best = max(evaluations, key=lambda r: r["metrics"]["spearman"])
    end = log[-1]
    assert end["event"] == "train_end" and end["metric_for_best"] == "spearman" and end["greater_is_better"] is True
    assert end["best_step"] == best["step"]
    assert single.result.metrics["validation"]["spearman"] == pytest.approx(best["metrics"]["spearman"], abs=1e-6)


def test_saved_as_transformers_saves_it_with_the_same_outputs(single):
    model, info = AutoModelForSequenceClassification.from_pretrained(single.out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    assert model.config.id2label == {0: "score"}
    tokenizer = AutoTokenizer.from_pretrained(single.out)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS[:4], padding=True, return_tensors="pt")).logits[:, 0]
    expected = [p["value"] for p in fk.load(single.out).predict(TEXTS[:4])]
    assert logits.tolist() == pytest.approx(expected, abs=1e-5)
    # the text-classification pipeline applies no function to a regression model's outputs
    scored = pipeline("text-classification", model=str(single.out))(TEXTS[:4])
    assert [s["label"] for s in scored] == ["score"] * 4
    assert [s["score"] for s in scored] == pytest.approx(expected, abs=1e-5)


def test_the_report_has_intervals_a_scatter_and_the_largest_errors(single):
    report = json.loads((single.out / "report.json").read_text(encoding="utf-8"))
    part = report["splits"]["validation"]
    metrics = single.result.metrics["validation"]
    headline = {row["key"]: row for row in part["headline"]}
    assert set(headline) == {"pearson", "spearman", "mse", "rmse", "mae"}
    for key, row in headline.items():
        assert row["value"] == metrics[key]
        assert row["low"] <= row["value"] <= row["high"] and row["low"] < row["high"], key
        assert part["intervals"]["metrics"][key]["estimate"] == pytest.approx(metrics[key], abs=1e-9)
    predicted = np.array([p["value"] for p in fk.load(single.out).predict(TEXTS)])
    sections = {s["title"]: s for s in part["sections"]}
    [scatter] = sections["Gold against predicted"]["blocks"]
    assert scatter["kind"] == "scatter" and scatter["diagonal"] is True and scatter["total"] == len(TEXTS)
    points = sorted(zip(scatter["x"], scatter["y"]))
    np.testing.assert_allclose(points, sorted(zip(SCORES, predicted)), atol=1e-5)
    assert scatter["plot"].endswith(".png") and (single.out / scatter["plot"]).is_file()
    errors = sections["Largest errors"]["blocks"][0]
    assert errors["columns"] == ["line", "text", "gold", "predicted", "|error|"]
    largest = np.max(np.abs(predicted - np.array(SCORES)))
    first = errors["rows"][0]
    assert first[4] == pytest.approx(largest, abs=1e-5) and first[4] == pytest.approx(abs(first[3] - first[2]))
    assert first[1] == TEXTS[first[0] - 2]  # line N of the file holds row N - 2 (after the header)
    assert "Pearson" in (single.out / "report.md").read_text(encoding="utf-8")


def test_the_model_card_counts_the_targets_per_whole_number(single):
    card = (single.out / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: text-classification" in card
    validation_counts = {f"[{k}, {k + 1})": sum(1 for s in SCORES if k <= s < k + 1) for k in range(5)}
    validation_counts["[5, 6]"] = SCORES.count(5.0)
    assert fk.load(single.out).task.label_counts(read_file(single.files["validation"])) == validation_counts
    assert "| \\[4, 5) | 6 |" in card and "| \\[5, 6] | 2 |" in card


def test_resume_from_a_checkpoint_ends_where_the_run_ended(single, tmp_path):
    """The last checkpoint removed, as if the run had died after step 10: resuming trains steps 11
    and 12 again and ends with the same weights and metrics."""
    moved = tmp_path / "moved"
    shutil.copytree(single.out, moved)
    shutil.rmtree(moved / "checkpoints" / "step-12")
    (moved / "metrics.json").unlink()
    resumed = fk.train(**{**single.settings, "output_dir": str(moved), "resume": True})
    assert resumed.global_step == 12
    first, second = load_file(single.out / "model.safetensors"), load_file(moved / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert resumed.metrics == single.result.metrics


# -- pairs, sigmoid ---------------------------------------------------------------------------------

def test_pairs_with_sigmoid_predict_in_range_and_save_raw_logits(pairs):
    state = manifest(pairs.out)["task_state"]
    assert state["pairs"] is True and state["sigmoid"] is True and state["target_range"] == [[0.0, 5.0]]
    predictor = fk.load(pairs.out)
    inputs = [(a, b) for a, b, _ in PAIRS]
    predictions = predictor.predict(inputs)
    values = [p["value"] for p in predictions]
    assert all(0.0 < v < 5.0 for v in values) and len({round(v, 6) for v in values}) > 1
    as_dicts = predictor.predict([{"sentence1": a, "sentence2": b} for a, b in inputs])
    assert [p["value"] for p in as_dicts] == pytest.approx(values, abs=1e-6)
    with pytest.raises(TaskError, match=r"regression predicts from \(text, text_pair\) pairs or dicts"):
        predictor.predict(["one text"])
    # a plain transformers user gets raw logits: LOW + sigmoid(logits) * (HIGH - LOW) are the predictions
    model = AutoModelForSequenceClassification.from_pretrained(pairs.out)
    tokenizer = AutoTokenizer.from_pretrained(pairs.out)
    with torch.no_grad():
        logits = model(**tokenizer([a for a, _ in inputs], [b for _, b in inputs], padding=True,
                                   return_tensors="pt")).logits[:, 0]
    assert (5 * torch.sigmoid(logits)).tolist() == pytest.approx(values, abs=1e-5)
    assert model.config.problem_type == "regression" and model.config.id2label == {0: "score"}


def test_the_sigmoid_loss_is_the_mse_of_the_scaled_values(pairs, tmp_path):
    """The validation loss (one batch) is the squared error on the [0, 1] scale, in training and
    after loading (where the forward is replaced again)."""
    validation = json.loads((pairs.out / "metrics.json").read_text())["validation"]
    evaluated = fk.evaluate(pairs.out, pairs.dev, tmp_path / "eval", **QUIET)
    assert evaluated["loss"] == pytest.approx(validation["loss"], abs=1e-6)
    predicted = np.array([p["value"] for p in fk.load(pairs.out).predict([(a, b) for a, b, _ in PAIRS])])
    gold = np.array([s for _, _, s in PAIRS])
    assert validation["loss"] == pytest.approx(np.mean((predicted / 5 - gold / 5) ** 2), rel=1e-4)
    assert validation["mse"] == pytest.approx(np.mean((predicted - gold) ** 2), rel=1e-4)


def test_pairs_are_one_sequence_with_segments_and_predict_writes_values(pairs, tmp_path):
    predictor = fk.load(pairs.out)
    raw = Dataset.from_list(predictor.task.to_examples([("the cat sat", "a dog ran")]))
    feature = prepare_features(predictor.task, raw, "predict")[0]
    assert predictor.tokenizer.convert_ids_to_tokens(feature["input_ids"]) == \
        ["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "ran", "[SEP]"]
    assert feature["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    output = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(app, ["predict", str(pairs.out), "--input", str(pairs.dev), "--output", str(output)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in output.read_text().splitlines()]
    expected = predictor.predict([(a, b) for a, b, _ in PAIRS])
    assert [set(w) for w in written] == [{"value"}] * len(PAIRS)
    assert [w["value"] for w in written] == pytest.approx([e["value"] for e in expected], abs=1e-6)


def test_a_sigmoid_range_defaults_to_the_training_targets(tiny_encoder):
    train = Dataset.from_list([{"text": "a", "label": "1.5"}, {"text": "b", "label": "4"}])
    task = RegressionTask(TaskSettings(options={"sigmoid": True}))
    task.setup(DatasetDict({"train": train}), AutoTokenizer.from_pretrained(tiny_encoder), {"train": "train.csv"})
    assert task.state()["target_range"] == [[1.5, 4.0]]
    labels = task.preprocess({"text": ["a", "b", "c"], "label": ["1.5", "4", "2.75"], ROW_INDEX: [0, 1, 2]},
                             "train")["labels"]
    assert labels == pytest.approx([0.0, 1.0, 0.5])


# -- several targets, LoRA -------------------------------------------------------------------------

def test_two_targets_with_lora_predict_named_values(two_targets, tmp_path):
    out = two_targets.out
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert any(".classifier." in k for k in load_file(out / "adapter_model.safetensors"))
    state = manifest(out)["task_state"]
    words = [len(t.split()) for t in TEXTS]
    assert state["targets"] == ["label_0", "label_1"]
    assert state["target_range"] == [[min(SCORES), max(SCORES)], [min(words), max(words)]]
    predictions = fk.load(out).predict(TEXTS)
    assert all(set(p) == {"values"} and list(p["values"]) == ["label_0", "label_1"] for p in predictions)
    predicted = np.array([[p["values"]["label_0"], p["values"]["label_1"]] for p in predictions])
    gold = np.array([row["label"] for row in two_targets.rows])
    assert (predicted.min(axis=0) > [min(SCORES), min(words)]).all()
    assert (predicted.max(axis=0) < [max(SCORES), max(words)]).all()
    validation = two_targets.result.metrics["validation"]
    for k, name in enumerate(["label_0", "label_1"]):
        assert validation["per_target"][name]["mse"] == pytest.approx(np.mean((predicted[:, k] - gold[:, k]) ** 2),
                                                                       rel=1e-4)
    assert validation["mse"] == pytest.approx(np.mean((predicted - gold) ** 2), rel=1e-4)
    # loading rebuilds encoder + adapter + head and scores as training did
    evaluated = fk.evaluate(out, two_targets.dev, tmp_path / "eval", **QUIET)
    assert_same_metrics(evaluated, dict(validation))
    # the report has a table per target and gives gold and predicted per target for the largest errors
    part = json.loads((out / "report.json").read_text(encoding="utf-8"))["splits"]["validation"]
    per_target = next(b for b in part["summary"] if b["title"] == "Per target")
    assert [row[0] for row in per_target["rows"]] == ["label_0", "label_1"]
    sections = {s["title"]: s for s in part["sections"]}
    assert len(sections["Gold against predicted"]["blocks"]) == 2  # a scatter per target
    errors = sections["Largest errors"]["blocks"][0]
    assert errors["columns"] == ["line", "text", "gold label_0", "predicted label_0", "gold label_1",
                                 "predicted label_1", "mean |error|"]
    worst = np.abs(predicted - gold).mean(axis=1).max()
    assert errors["rows"][0][-1] == pytest.approx(worst, abs=1e-5)


def test_metric_for_best_mse_keeps_the_lowest(two_targets):
    log = log_records(two_targets.out)
    evaluations = [r for r in log if r["event"] == "evaluate"]
    mse = [r["metrics"]["mse"] for r in evaluations]
    assert len(evaluations) == 8 and len(set(mse)) > 1
    best = min(evaluations, key=lambda r: r["metrics"]["mse"])
    end = log[-1]
    assert end["metric_for_best"] == "mse" and end["greater_is_better"] is False
    assert end["best_step"] == best["step"]
    assert two_targets.result.metrics["validation"]["mse"] == pytest.approx(best["metrics"]["mse"], rel=1e-5)


def test_target_columns_read_one_number_each(tiny_encoder, tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"text": "a", "x": "1", "y": "-2.5"}, {"text": "b", "x": "3e1", "y": "0"}])
    task = RegressionTask(TaskSettings(options={"target_columns": "x, y"}))
    task.setup(DatasetDict({"train": read_file(path)}), AutoTokenizer.from_pretrained(tiny_encoder),
               {"train": str(path)})
    assert task.targets == ["x", "y"]
    assert task.gold(read_file(path)).tolist() == [[1.0, -2.5], [30.0, 0.0]]
    model = task.build_model(load_pretrained_encoder(tiny_encoder, keep_pooler=True))
    assert model.config.num_labels == 2 and model.config.id2label == {0: "x", 1: "y"}
    assert model.config.problem_type == "regression" and task.head_modules == ("classifier",)


# -- bad input -------------------------------------------------------------------------------------

def cli_train(tiny_encoder: str, train: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["train", "--task", "regression", "--model", tiny_encoder, "--train", str(train),
                                    "--output", str(out), "--max-steps", "1", *extra])


@pytest.mark.parametrize(("cell", "message"), [
    ("abc", "score 'abc' is not a number"), ("nan", "score 'nan' is not a number"),
    ("inf", "score 'inf' is not a finite number"), ("", "score is empty"),
])
def test_a_target_that_is_no_number_is_a_one_line_error(tiny_encoder, tmp_path, cell, message):
    rows = [{"text": "good", "score": "1"}, {"text": "bad", "score": "2.5"}, {"text": "fine", "score": cell}]
    train = write_csv(tmp_path / "train.csv", rows)
    result = cli_train(tiny_encoder, train, tmp_path / "out", "--label-column", "score")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {train} line 4: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--label-column", "rating"],
     "train.csv: column 'rating' not found; the columns are text, score (set --label-column)"),
    (["--label-column", "score", "--text-pair-column", "second"],
     "train.csv: column 'second' not found; the columns are text, score (set --text-pair-column)"),
    (["-o", "target_columns=score,stars"],
     "train.csv: column 'stars' not found; the columns are text, score (set -o target_columns)"),
    (["--label-column", "score", "-o", "target_range=0,5"],
     "task_options.target_range: only used with sigmoid=true"),
    (["--label-column", "score", "-o", "sigmoid=true", "-o", "target_range=5,0"],
     "task_options.target_range: '5,0' is not allowed; give LOW,HIGH, two numbers with LOW < HIGH, e.g. 0,5"),
    (["--label-column", "score", "-o", "sigmoid=true", "-o", "target_range=0,2"],
     "train.csv line 3: score 2.5 outside task_options.target_range [0, 2]"),
])
def test_missing_columns_and_bad_options_are_one_line_errors(tiny_encoder, tmp_path, extra, message):
    train = write_csv(tmp_path / "train.csv", [{"text": "good", "score": "1"}, {"text": "bad", "score": "2.5"}])
    result = cli_train(tiny_encoder, train, tmp_path / "out", *extra)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(message), result.output


def test_a_label_list_of_another_length_names_its_line(tiny_encoder, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": [1.0, 2.0]}, {"text": "b", "label": [1.0]}])
    result = cli_train(tiny_encoder, train, tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {train} line 2: label is a list of 1; the targets are label_0, label_1"


def test_an_architecture_without_a_transformers_head_is_a_task_error():
    task = RegressionTask(TaskSettings())
    task.targets = ["label"]
    encoder = torch.nn.Module()
    encoder.config = SimpleNamespace()
    with pytest.raises(TaskError, match=r"^regression needs the architecture's transformers sequence-classification "
                                        r"head; transformers has none for SimpleNamespace$"):
        task.build_model(encoder)


# -- two processes, real data ------------------------------------------------------------------------

@two_process_run("regression")
def plan_two_processes(directory: Path, encoder: str) -> list[str]:
    rows = [{"text": t, "score": s} for t, s in zip(TEXTS, SCORES)]
    train = write_csv(directory / "train.csv", rows)
    dev = write_csv(directory / "dev.csv", rows[::3][:5])
    return ["--task", "regression", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--label-column", "score", "--max-steps", "2", "--batch-size", "4",
            "--eval-batch-size", "2", "--learning-rate", "1e-3", "report_plots=false", "bootstrap_resamples=0"]


def test_two_processes_evaluate_like_one(two_process_runs, tmp_path):
    """5 validation texts in batches of 2: the second process repeats a batch at the end, whose
    duplicates must count neither in the metrics nor in the loss."""
    run = two_process_runs["regression"].check()
    validation = validation_metrics(run.out)
    assert validation["num_examples"] == 5
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=2, **QUIET)
    assert_same_metrics(single, validation)


STSB = SHARED_DATA / "stsb"


@pytest.mark.slow
@pytest.mark.skipif(not (STSB / "train.tsv").is_file(), reason="needs ../shared/data/stsb")
def test_stsb_reads_and_validates_completely(tiny_encoder):
    raw = DatasetDict({"train": read_file(STSB / "train.tsv"), "validation": read_file(STSB / "dev.tsv")})
    assert (len(raw["train"]), len(raw["validation"])) == (5749, 1500)
    task = RegressionTask(TaskSettings(text_column="sentence1", text_pair_column="sentence2", label_column="score"))
    task.setup(raw, AutoTokenizer.from_pretrained(tiny_encoder),
               {"train": str(STSB / "train.tsv"), "validation": str(STSB / "dev.tsv")})
    assert task.pairs is True and task.targets == ["score"]
    for ds in raw.values():
        gold = task.gold(ds)
        assert gold.shape == (len(ds), 1) and gold.min() == 0.0 and gold.max() == 5.0
        assert sum(task.label_counts(ds).values()) == len(ds)
