"""multi-label-classification: the three label layouts and label_names, the set metrics, tuned
thresholds (global and per label) saved with the model, predictions, transformers-native saving,
LoRA, pairs, resume, two-process evaluation, bad inputs and the report.

Two tiny models are trained once for the module (single texts, fully fine-tuned; pairs with LoRA
and per-label thresholds) and most tests look at them; the unit tests build a task without
training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app
from finetune_kit.data import read_file
from finetune_kit.inference import prepare_features
from finetune_kit.task import DataError, TaskError, TaskSettings
from finetune_kit_tasks.multi_label_classification import MultiLabelClassificationTask, multi_label_metrics
from tests.conftest import SHARED_DATA, write_csv, write_jsonl
from tests.launched import two_process_run
from tests.test_distributed import rounded
from tests.test_resume import without_timing

TASK = "multi-label-classification"
LABELS = ["animal", "color", "size"]
# Keyword-learnable: animal (cat, dog), color (red, blue, green), size (big, small); some have none.
ROWS = [("the cat sat", ["animal"]), ("a red mat", ["color"]), ("the big park", ["size"]),
        ("the red cat sat", ["animal", "color"]), ("a big dog ran", ["animal", "size"]),
        ("the small green mat", ["color", "size"]), ("the big red dog", ["animal", "color", "size"]),
        ("he went to work", []), ("a dog in the park", ["animal"]), ("blue and green", ["color"]),
        ("a small child", ["size"]), ("she said thanks", [])]
PAIRS = [("the cat sat", "on the red mat", ["animal", "color"]), ("she went", "to the big park", ["size"]),
         ("a dog ran", "in the park", ["animal"]), ("he said thanks", "to the woman", []),
         ("the small cat", "was green", ["animal", "color", "size"]), ("blue and red", "it is", ["color"])]
QUICK = {"batch_size": 4, "learning_rate": 1e-2, "max_length": 32, "report_plots": False,
         "bootstrap_resamples": 200}
GRID = [round(k / 100, 2) for k in range(5, 96)]


def best_on_grid(f1_of) -> float:
    """The grid threshold with the best F1 (computed by ``f1_of``), ties to the one nearest 0.5."""
    return max(GRID, key=lambda t: (round(f1_of(t), 12), -abs(t - 0.5), -t))


def gold_matrix(label_sets, labels=LABELS) -> np.ndarray:
    return np.array([[name in given for name in labels] for given in label_sets], dtype=int)


def score_matrix(predictions, labels=LABELS) -> np.ndarray:
    return np.array([[p["scores"][name] for name in labels] for p in predictions])


def manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "finetune_kit.json").read_text(encoding="utf-8"))


# -- the two trained models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("multi-label")
    rows = [{"text": text, "labels": labels} for text, labels in ROWS]
    texts = {"train": write_jsonl(root / "train.jsonl", rows * 2), "validation": write_jsonl(root / "dev.jsonl", rows),
             "test": write_jsonl(root / "test.jsonl", rows[::-1])}
    # six steps; checkpoints (kept) after steps 3 and 6, for the resume test
    texts_settings = dict(task=TASK, model=tiny_encoder, train_file=str(texts["train"]),
                          validation_file=str(texts["validation"]), test_file=str(texts["test"]), epochs=1,
                          eval_steps=3, save_steps=3, save_total_limit=2, **QUICK)
    texts_result = fk.train(output_dir=str(root / "texts"), **texts_settings)

    pair_rows = [{"text": a, "text_pair": b, **{name: int(name in labels) for name in LABELS}} for a, b, labels in PAIRS]
    pair_dev = [row for row in pair_rows if not row["size"]]  # no validation example of "size"
    pairs = {"train": write_csv(root / "pairs.csv", pair_rows * 3), "validation": write_csv(root / "pairs-dev.csv", pair_dev)}
    pairs_result = fk.train(task=TASK, model=tiny_encoder, train_file=str(pairs["train"]),
                            validation_file=str(pairs["validation"]), output_dir=str(root / "pairs"), lora=True,
                            max_steps=6, task_options={"label_columns": "animal,color,size", "per_label_threshold": True},
                            **QUICK)
    return SimpleNamespace(root=root, texts=root / "texts", texts_files=texts, texts_settings=texts_settings,
                           texts_result=texts_result, pairs=root / "pairs", pairs_files=pairs, pairs_result=pairs_result,
                           pair_dev=pair_dev)


def test_predictions_are_the_labels_at_the_threshold_and_every_score(runs):
    predictor = fk.load(runs.texts)
    threshold = manifest(runs.texts)["task_state"]["threshold"]
    assert predictor.labels == LABELS
    texts = [text for text, _ in ROWS]
    predictions = predictor.predict(texts)
    assert len(predictions) == len(texts)
    for prediction in predictions:
        assert set(prediction) == {"labels", "scores"}
        assert set(prediction["scores"]) == set(LABELS)
        assert all(0.0 < s < 1.0 for s in prediction["scores"].values())
        expected = sorted((name for name, s in prediction["scores"].items() if s >= threshold),
                          key=lambda name: -prediction["scores"][name])
        assert [p["label"] for p in prediction["labels"]] == expected
        assert [p["score"] for p in prediction["labels"]] == [prediction["scores"][n] for n in expected]
    with pytest.raises(TaskError, match="predicts from strings or dicts"):
        predictor.predict([("a pair", "of texts")])


def test_the_global_threshold_is_tuned_on_validation_and_saved(runs):
    """The saved threshold is the grid value with the best validation macro F1 (sklearn's), ties
    nearest 0.5; the test metrics are scored with it, and an evaluation after loading uses it."""
    predictor = fk.load(runs.texts)
    scores = score_matrix(predictor.predict([text for text, _ in ROWS]))
    gold = gold_matrix([labels for _, labels in ROWS])
    expected = best_on_grid(lambda t: f1_score(gold, scores >= t, average="macro", zero_division=0))
    assert manifest(runs.texts)["task_state"]["threshold"] == expected
    assert predictor.task.threshold == expected
    test_metrics = dict(runs.texts_result.metrics["test"])
    assert test_metrics["threshold"] == expected
    evaluated = fk.evaluate(runs.texts, runs.texts_files["test"], runs.root / "evaluation", bootstrap_resamples=0)
    assert evaluated.pop("loss") == pytest.approx(test_metrics.pop("loss"), abs=1e-6)
    assert rounded(evaluated) == rounded(test_metrics)
    reversed_gold = gold[::-1]
    assert evaluated["macro_f1"] == pytest.approx(f1_score(reversed_gold, scores[::-1] >= expected, average="macro",
                                                           zero_division=0), abs=1e-6)


def test_saved_as_a_transformers_multi_label_classifier(runs):
    model, info = AutoModelForSequenceClassification.from_pretrained(runs.texts, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == dict(enumerate(LABELS))
    assert manifest(runs.texts)["transformers_class"] == "BertForSequenceClassification"
    texts = [text for text, _ in ROWS[:5]]
    tokenizer = AutoTokenizer.from_pretrained(runs.texts)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    ours = score_matrix(fk.load(runs.texts).predict(texts))
    assert torch.sigmoid(logits).numpy() == pytest.approx(ours, abs=1e-5)
    # its loss is binary cross-entropy on multi-hot labels
    targets = torch.tensor(gold_matrix([labels for _, labels in ROWS[:5]]), dtype=torch.float32)
    with torch.no_grad():
        loss = model(**tokenizer(texts, padding=True, return_tensors="pt"), labels=targets).loss
    assert float(loss) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)))


def test_report_has_intervals_the_per_label_chart_thresholds_and_errors(runs):
    report = json.loads((runs.texts / "report.json").read_text(encoding="utf-8"))
    validation = report["splits"]["validation"]
    intervals = validation["intervals"]["metrics"]
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
        assert intervals[key]["low"] <= validation["metrics"][key] <= intervals[key]["high"]
    blocks = [b for s in validation["sections"] for b in s["blocks"]] + validation["summary"]
    [chart] = [b for b in blocks if b["kind"] == "bars"]
    assert chart["categories"] == LABELS and set(chart["series"]) == {"precision", "recall", "F1"}
    assert chart["series"]["F1"] == [validation["metrics"]["per_label"][n]["f1"] for n in LABELS]
    [thresholds] = [b for b in blocks if b["kind"] == "table" and b["title"].startswith("Decision thresholds")]
    assert thresholds["rows"] == [["every label", manifest(runs.texts)["task_state"]["threshold"]]]
    [errors] = [b for b in blocks if b["kind"] == "table" and b["title"] == "Most wrong label sets"]
    wrong = [row[-1] != "(none)" or row[-2] != "(none)" for row in errors["rows"]]
    assert errors["rows"] and all(wrong)
    counts = [len(row[-1].split(", ")) * (row[-1] != "(none)") + len(row[-2].split(", ")) * (row[-2] != "(none)")
              for row in errors["rows"]]
    assert counts == sorted(counts, reverse=True)  # the most wrong labels first
    card = (runs.texts / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: text-classification" in card
    assert "| animal | 10 |" in card  # examples carrying the label in the training data (5 x 2)


def test_cli_predicts_and_evaluates(runs, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "the red dog"}, {"text": "a big cat"}])
    out = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(app, ["predict", str(runs.texts), "--input", str(inputs), "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == fk.load(runs.texts).predict(["the red dog", "a big cat"])
    result = CliRunner().invoke(app, ["evaluate", str(runs.texts), "--data", str(runs.texts_files["validation"]),
                                      "--output", str(tmp_path / "eval"), "--no-plots", "--bootstrap-resamples", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["dev"]
    assert metrics["macro_f1"] == pytest.approx(runs.texts_result.metrics["validation"]["macro_f1"])


def test_resume_from_a_checkpoint_ends_as_the_uninterrupted_run(runs, tmp_path):
    """The run resumed from its step-3 checkpoint trains steps 4-6 again, to the same step-6
    weights, the same best model, metrics and tuned threshold."""
    copy = tmp_path / "run"
    shutil.copytree(runs.texts, copy)
    (copy / "metrics.json").unlink()
    shutil.rmtree(copy / "checkpoints" / "step-6")
    resumed = fk.train(output_dir=str(copy), resume=True, **runs.texts_settings)
    for weights in ("checkpoints/step-6/model.safetensors", "model.safetensors"):
        first, second = load_file(runs.texts / weights), load_file(copy / weights)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), weights
    assert without_timing(resumed.metrics) == without_timing(runs.texts_result.metrics)
    assert manifest(copy)["task_state"] == manifest(runs.texts)["task_state"]


def test_lora_pairs_with_label_columns_and_per_label_thresholds(runs):
    out = runs.pairs
    assert not (out / "model.safetensors").exists()
    saved = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())
    assert any(".classifier." in k for k in saved)
    state = manifest(out)["task_state"]
    assert state["pairs"] is True and state["labels"] == LABELS

    predictor = fk.load(out)
    pairs = [(a, b) for a, b, _ in PAIRS]
    predictions = predictor.predict(pairs)
    assert predictor.predict(pairs) == predictions
    with pytest.raises(TaskError, match=r"predicts from \(text, text_pair\) pairs or dicts"):
        predictor.predict(["one text"])
    raw = Dataset.from_list(predictor.task.to_examples([("the cat sat", "a dog ran")]))
    feature = prepare_features(predictor.task, raw, "predict")[0]
    assert predictor.tokenizer.convert_ids_to_tokens(feature["input_ids"]) == \
        ["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "ran", "[SEP]"]
    assert feature["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]

    # each label's threshold is its own best validation F1; "size" has no validation example, so
    # it keeps the threshold that is best for all labels together
    dev = [((row["text"], row["text_pair"]), [n for n in LABELS if row[n]]) for row in runs.pair_dev]
    scores = score_matrix(predictor.predict([pair for pair, _ in dev]))
    gold = gold_matrix([labels for _, labels in dev])
    overall = best_on_grid(lambda t: f1_score(gold, scores >= t, average="macro", zero_division=0))
    expected = {name: best_on_grid(lambda t, k=k: f1_score(gold[:, k], scores[:, k] >= t, zero_division=0))
                for k, name in enumerate(LABELS[:2])}
    assert state["threshold"] == {**expected, "size": overall}

    # loading rebuilds encoder + adapter + head: it scores as the trained model did
    evaluated = fk.evaluate(out, runs.pairs_files["validation"], runs.root / "pairs-eval", bootstrap_resamples=0)
    validation = dict(runs.pairs_result.metrics["validation"])
    assert evaluated.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert rounded(evaluated) == rounded(validation)


@two_process_run("multi-label-classification")
def plan_two_processes(directory: Path, encoder: str) -> list[str]:
    names = directory / "names.txt"
    names.write_text("animal\ncolor\nsize\nplant", encoding="utf-8")  # "plant" never occurs
    rows = [{"text": text, "labels": ",".join(str(LABELS.index(n)) for n in labels)} for text, labels in ROWS]
    train = write_csv(directory / "train.csv", rows * 2)
    dev = write_csv(directory / "dev.csv", rows + [{"text": "the blue dog", "labels": "1,0"}])
    return ["--task", TASK, "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "4",
            "--learning-rate", "1e-2", "--max-length", "32", "report_plots=false", "bootstrap_resamples=0",
            "-o", "label_separator=,", "-o", f"label_names={names}"]


def test_two_processes_evaluate_like_one(two_process_runs, tmp_path):
    """Trained through the CLI under ``accelerate launch``: label ids joined by commas, named by a
    label_names file; 13 validation rows, uneven over 2 processes and batches of 4. The
    threshold tuned on the gathered predictions and the metrics are those of one process."""
    run = two_process_runs["multi-label-classification"].check()
    validation = json.loads((run.out / "metrics.json").read_text())["validation"]
    assert validation["num_examples"] == 13
    assert list(validation["per_label"]) == ["animal", "color", "size", "plant"]
    assert [validation["per_label"][n]["support"] for n in LABELS] == [6, 6, 5]
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=4, bootstrap_resamples=0)
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert rounded(single) == rounded(validation)


# -- the metrics and thresholds, without training -------------------------------------------------

# gold and predicted label sets of six examples over labels a, b, c
HAND_GOLD = [{"a", "b"}, {"c"}, {"c"}, {"a", "c"}, set(), set()]
HAND_PREDICTED = [{"a"}, {"c"}, {"b"}, {"a", "b", "c"}, {"a"}, set()]


def test_metrics_of_a_hand_made_example():
    gold, predicted = (gold_matrix(sets, ["a", "b", "c"]).astype(bool) for sets in (HAND_GOLD, HAND_PREDICTED))
    metrics = multi_label_metrics(gold, predicted, ["a", "b", "c"])
    # a: right in 1 and 4, extra in 5; b: missed in 1, extra in 3 and 4; c: right in 2 and 4,
    # missed in 3. micro: 4 right of 7 predicted and 6 gold; macro: the mean of a's, b's and c's.
    expected = {"micro_precision": 4 / 7, "micro_recall": 4 / 6, "micro_f1": 8 / 13,
                "macro_precision": (2 / 3 + 0 + 1) / 3, "macro_recall": (1 + 0 + 2 / 3) / 3,
                "macro_f1": (0.8 + 0 + 0.8) / 3,
                "subset_accuracy": 2 / 6,  # examples 2 and 6 (both empty) exactly right
                "hamming_loss": 5 / 18,  # 1 + 0 + 2 + 1 + 1 + 0 wrong decisions of 6 x 3
                "label_cardinality_gold": 6 / 6, "label_cardinality_predicted": 7 / 6}
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["num_examples"] == 6 and metrics["num_without_predicted_labels"] == 1
    assert metrics["per_label"].keys() == {"a", "b", "c"}
    for name, figures in {"a": (2 / 3, 1.0, 0.8, 2), "b": (0.0, 0.0, 0.0, 1), "c": (1.0, 2 / 3, 0.8, 3)}.items():
        got = metrics["per_label"][name]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(figures)
    # and as scikit-learn has them
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(gold, predicted, average=average, zero_division=0)
        assert (metrics[f"{average}_precision"], metrics[f"{average}_recall"], metrics[f"{average}_f1"]) == \
            pytest.approx((p, r, f))
    assert metrics["subset_accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(gold, predicted))


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(tiny_encoder)


def set_up(tokenizer, rows_or_files: dict, **options) -> MultiLabelClassificationTask:
    """A task set up on splits given as row lists or files."""
    task = MultiLabelClassificationTask(TaskSettings(label_column="labels", options=options))
    splits = {split: read_file(v) if isinstance(v, Path) else Dataset.from_list(v) for split, v in rows_or_files.items()}
    task.setup(DatasetDict(splits), tokenizer, {split: str(v) if isinstance(v, Path) else f"{split}.jsonl"
                                                for split, v in rows_or_files.items()})
    return task


def test_the_hand_made_example_through_the_task(tokenizer):
    rows = [{"text": f"text {i}", "labels": sorted(given)} for i, given in enumerate(HAND_GOLD)]
    task = set_up(tokenizer, {"train": rows}, threshold=0.5)
    predictions = [{"labels": [], "scores": {n: 0.9 if n in chosen else 0.1 for n in "abc"}} for chosen in HAND_PREDICTED]
    metrics = task.compute_metrics(predictions, Dataset.from_list(rows))
    assert metrics["micro_f1"] == pytest.approx(8 / 13) and metrics["macro_f1"] == pytest.approx(1.6 / 3)
    assert metrics["threshold"] == 0.5
    assert task.calibrate(predictions, Dataset.from_list(rows)) is False  # a fixed threshold is not tuned
    assert task.label_counts(Dataset.from_list(rows)) == {"a": 2, "b": 1, "c": 3}


# validation scores of labels a, b, c; c has no validation example
CALIBRATION = [({"a"}, {"a": 0.90, "b": 0.15, "c": 0.70}), (set(), {"a": 0.60, "b": 0.10, "c": 0.20}),
               ({"a", "b"}, {"a": 0.95, "b": 0.40, "c": 0.30}), (set(), {"a": 0.20, "b": 0.05, "c": 0.80})]


@pytest.mark.parametrize(("options", "expected"), [
    # a alone is right for t in (0.60, 0.90], b alone for (0.15, 0.40]: nearest 0.5, 0.61 and 0.40;
    # for both, macro F1 is best, (0.8 + 1) / 2, for t in (0.20, 0.40]: 0.40; c keeps that
    ({"per_label_threshold": True}, {"a": 0.61, "b": 0.40, "c": 0.40}),
    ({}, 0.40),
])
def test_thresholds_tuned_on_a_constructed_case(tokenizer, options, expected):
    train = [{"text": "x", "labels": ["a", "b", "c"]}]
    task = set_up(tokenizer, {"train": train}, **options)
    validation = Dataset.from_list([{"text": "x", "labels": sorted(gold)} for gold, _ in CALIBRATION])
    predictions = [{"labels": [], "scores": scores} for _, scores in CALIBRATION]
    assert task.calibrate(predictions, validation) is True
    assert task.threshold == expected
    assert task.state()["threshold"] == expected
    # the metrics decide at the tuned thresholds from the scores every prediction keeps
    decided = task.compute_metrics(predictions, validation)
    assert decided["per_label"]["a"]["f1"] == (1.0 if options else 0.8)
    assert decided["per_label"]["b"]["f1"] == 1.0


def test_the_three_layouts_give_the_same_label_sets(tokenizer, tmp_path):
    sets = [labels for _, labels in ROWS]
    listed = write_jsonl(tmp_path / "listed.jsonl", [{"text": t, "labels": labels} for t, labels in ROWS])
    joined = write_csv(tmp_path / "joined.csv", [{"text": t, "labels": ";".join(labels)} for t, labels in ROWS])
    columns = write_csv(tmp_path / "columns.csv", [{"text": t, **{n: int(n in labels) for n in LABELS}}
                                                   for t, labels in ROWS])
    for path, options in ((listed, {}), (joined, {"label_separator": ";"}),
                          (columns, {"label_columns": "animal,color,size"})):
        task = set_up(tokenizer, {"train": path}, **options)
        assert task.labels == LABELS
        assert task.label_counts(read_file(path)) == {"animal": 5, "color": 5, "size": 5}
        assert task.gold_matrix(read_file(path)).astype(int).tolist() == gold_matrix(sets).tolist()
    # JSON booleans in label columns; labels seen only as integers sort numerically
    flags = write_jsonl(tmp_path / "flags.jsonl", [{"text": "x", "b": True, "a": False}, {"text": "y", "b": False, "a": True}])
    assert set_up(tokenizer, {"train": flags}, label_columns=["b", "a"]).labels == ["b", "a"]
    numbered = [{"text": "x", "labels": [10, 2]}, {"text": "y", "labels": []}]
    assert set_up(tokenizer, {"train": numbered}).labels == ["2", "10"]


def test_label_names_from_a_file_or_a_list_with_ids(tokenizer, tmp_path):
    names = tmp_path / "emotions.txt"
    names.write_text("joy\nanger\nfear", encoding="utf-8")  # no newline at the end, as GoEmotions'
    train = write_csv(tmp_path / "train.csv", [{"text": "x", "labels": "2,0"}, {"text": "y", "labels": "anger"},
                                               {"text": "z", "labels": ""}])
    for given in (str(names), "joy,anger,fear", ["joy", "anger", "fear"]):
        task = set_up(tokenizer, {"train": train}, label_separator=",", label_names=given)
        assert task.labels == ["joy", "anger", "fear"]
        assert task.gold_matrix(read_file(train)).astype(int).tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    # a loaded model reads ids with the label set it saved, without the file
    loaded = MultiLabelClassificationTask(TaskSettings(label_column="labels", options={"label_separator": ","}))
    loaded.load_state(task.state(), tokenizer)
    assert loaded.gold_matrix(read_file(train)).astype(int).tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


# -- bad inputs: one line naming the file and line ---------------------------------------------------

def cli_train(tiny_encoder, train, out, *extra) -> list[str]:
    result = CliRunner().invoke(app, ["train", "--task", TASK, "--model", tiny_encoder, "--train", str(train),
                                      "--output", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    return result.output.strip().splitlines()


def test_bad_inputs_are_one_line_errors(tiny_encoder, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("joy\nanger", encoding="utf-8")
    out = tmp_path / "out"
    ids = write_csv(tmp_path / "ids.csv", [{"text": "x", "labels": "0"}, {"text": "y", "labels": "1,31"}])
    assert cli_train(tiny_encoder, ids, out, "-o", "label_separator=,", "-o", f"label_names={names}") == [
        f"error: {ids} line 3: label id 31 is out of range (0-1)"]
    unnamed = write_jsonl(tmp_path / "unnamed.jsonl", [{"text": "x", "labels": ["joy"]}, {"text": "y", "labels": ["awe"]}])
    assert cli_train(tiny_encoder, unnamed, out, "-o", f"label_names={names}") == [
        f"error: {unnamed} line 2: label 'awe' is not among label_names (joy, anger)"]
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "labels": labels} for t, labels in ROWS])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "x", "labels": ["animal"]}, {"text": "y", "labels": ["plant"]}])
    assert cli_train(tiny_encoder, train, out, "--validation", str(dev)) == [
        f"error: {dev} line 2: label 'plant' was never seen in training (training labels: animal, color, size)"]
    assert cli_train(tiny_encoder, train, out, "--label-column", "tags") == [
        f"error: {train}: column 'tags' not found; the columns are text, labels (set --label-column)"]
    assert cli_train(tiny_encoder, train, out, "--text-pair-column", "second") == [
        f"error: {train}: column 'second' not found; the columns are text, labels (set --text-pair-column)"]
    columns = write_csv(tmp_path / "columns.csv", [{"text": "x", "a": "1", "b": "0"}, {"text": "y", "a": "2", "b": "1"}])
    assert cli_train(tiny_encoder, columns, out, "-o", "label_columns=a,b") == [
        f"error: {columns} line 3: column 'a' holds '2'; a label column holds 0 or 1"]
    assert cli_train(tiny_encoder, columns, out, "-o", "label_columns=a,c") == [
        f"error: {columns}: column 'c' not found; the columns are text, a, b (set -o label_columns)"]


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 1.5}, r"task_options.threshold: 1.5 is not allowed; give a number in \(0, 1\)"),
    ({"threshold": 0.3, "per_label_threshold": True}, "per_label_threshold: tunes thresholds"),
    ({"label_columns": "a,b", "label_separator": ","}, "label_separator: goes with a label column"),
    ({"label_separator": ""}, "label_separator: '' is not allowed"),
    ({"label_names": "no-such-file"}, "label_names: no-such-file is not a file"),
])
def test_bad_options_are_task_errors(options, message):
    with pytest.raises(TaskError, match=message):
        MultiLabelClassificationTask(TaskSettings(options=options))._given_label_names()


def test_an_architecture_without_a_transformers_classifier_is_a_task_error(tokenizer):
    task = set_up(tokenizer, {"train": [{"text": "x", "labels": ["a"]}]})
    encoder = torch.nn.Module()
    encoder.config = SimpleNamespace(hidden_size=8)
    with pytest.raises(TaskError, match=f"^{TASK} needs an encoder that transformers has a sequence-classification "
                                        f"class for; Module has none$"):
        task.build_model(encoder)


@pytest.mark.parametrize("prior_bias", [True, False])
def test_a_new_head_starts_at_the_label_prior(tokenizer, tiny_encoder, prior_bias):
    """Output biases at the log-odds of the training shares (a 1/4, b 3/4, c never: kept at
    1/1000); with prior_bias=false the head's own zero biases."""
    from transformers import AutoModel

    rows = [{"text": "x", "labels": ["a"]}, {"text": "y", "labels": ["b"]}, {"text": "z", "labels": ["b"]},
            {"text": "w", "labels": ["b"]}]
    task = set_up(tokenizer, {"train": rows}, label_names="a,b,c", prior_bias=prior_bias)
    model = task.build_model(AutoModel.from_pretrained(tiny_encoder))
    probabilities = torch.sigmoid(model.classifier.bias).detach().numpy()
    np.testing.assert_allclose(probabilities, [0.25, 0.75, 0.001] if prior_bias else [0.5] * 3, rtol=1e-5)


def test_a_training_set_without_labels_is_refused(tokenizer):
    with pytest.raises(TaskError, match="no example has a label"):
        set_up(tokenizer, {"train": [{"text": "x", "labels": []}]})
    with pytest.raises(DataError, match="train.jsonl: column 'text' is empty"):
        set_up(tokenizer, {"train": [{"text": " ", "labels": ["a"]}]})


# -- real data -------------------------------------------------------------------------------------------

GOEMOTIONS = SHARED_DATA / "goemotions"


@pytest.mark.slow
@pytest.mark.skipif(not GOEMOTIONS.is_dir(), reason="needs ../shared/data/goemotions")
def test_goemotions_ids_with_label_names(tiny_encoder, tmp_path):
    """GoEmotions' files (no header: text, comma-joined ids, comment id) read through a header-ful
    copy of their first rows, with emotions.txt naming the 28 ids."""
    def copy(name: str, count: int) -> Path:
        lines = (GOEMOTIONS / name).read_text(encoding="utf-8").splitlines()[:count]
        path = tmp_path / name
        path.write_text("text\tlabels\tid\n" + "\n".join(lines) + "\n", encoding="utf-8")
        return path

    train, dev = copy("train.tsv", 300), copy("dev.tsv", 100)
    emotions = (GOEMOTIONS / "emotions.txt").read_text(encoding="utf-8").split("\n")
    result = fk.train(task=TASK, model=tiny_encoder, train_file=str(train), validation_file=str(dev),
                      output_dir=str(tmp_path / "out"), max_steps=2, batch_size=16, max_length=64,
                      report_plots=False, bootstrap_resamples=0,
                      task_options={"label_separator": ",", "label_names": str(GOEMOTIONS / "emotions.txt")})
    assert len(emotions) == 28 and fk.load(tmp_path / "out").labels == emotions
    counts = np.zeros(28, dtype=int)
    for line in dev.read_text(encoding="utf-8").splitlines()[1:]:
        for index in line.split("\t")[1].split(","):
            counts[int(index)] += 1
    per_label = result.metrics["validation"]["per_label"]
    assert [per_label[name]["support"] for name in emotions] == counts.tolist()
