"""The multiple-choice task: its three data layouts, questions with different numbers of choices
(padded choices never win and take no part in the loss), the transformers-native save, LoRA,
resume, two-process evaluation, the report, and one-line errors for bad data."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import load_file
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app
from finetune_kit.data import read_file
from finetune_kit.inference import make_collate, prepare_features, split_model_inputs
from finetune_kit.registry import get_task_class
from finetune_kit.saved_models import task_settings
from finetune_kit.task import TaskError
from tests.conftest import SHARED_DATA, one_torch_thread, write_csv, write_jsonl
from tests.launched import two_process_run
from tests.test_distributed import validation_metrics

# (question, choices, index of the right one): the right choice repeats a word of the question;
# two to four choices a question.
TOY = [
    ("the cat sat on the mat", ["cat", "dog", "park"], 0),
    ("the dog ran in the park", ["red", "dog", "mat", "blue"], 1),
    ("a big red film", ["small", "red"], 1),
    ("the old man saw the dog", ["woman", "child", "old"], 2),
    ("she went to work", ["work", "night", "day", "music"], 0),
    ("a blue and green scene", ["movie", "story", "green"], 2),
    ("the new phone", ["tablet", "new"], 1),
    ("i love this music", ["hate", "film", "plot", "music"], 3),
]
LETTERS = "ABCD"
FLAT_FIELDS = ["question", "choice0", "choice1", "choice2", "choice3", "label"]
QUICK = {"batch_size": 4, "learning_rate": 5e-3, "report_plots": False, "max_length": 32}


def flat_rows(questions=TOY) -> list[dict]:
    return [{"question": q, **{f"choice{i}": c for i, c in enumerate(choices)}, "label": answer}
            for q, choices, answer in questions]


def listed_rows(questions=TOY) -> list[dict]:
    return [{"question": q, "choices": choices, "label": answer} for q, choices, answer in questions]


def nested_rows(questions=TOY) -> list[dict]:
    """CommonsenseQA's layout: choices labelled A, B, ...; the right one named by answerKey."""
    return [{"id": f"q{n}", "answerKey": LETTERS[answer],
             "question": {"stem": q, "choices": [{"label": LETTERS[i], "text": c} for i, c in enumerate(choices)]}}
            for n, (q, choices, answer) in enumerate(questions)]


def new_task(**options):
    task_class = get_task_class("multiple-choice")
    return task_class(task_settings({"task_options": options, "max_length": 32}, task_class))


one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)  # bit-identical resumes


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mc-data")
    return {"train": write_csv(root / "train.csv", flat_rows() * 2, FLAT_FIELDS),
            "validation": write_jsonl(root / "dev.jsonl", listed_rows()),
            "test": write_jsonl(root / "test.jsonl", nested_rows(TOY)),
            "tsv": write_csv(root / "toy.tsv", flat_rows(), FLAT_FIELDS, delimiter="\t")}


@pytest.fixture(scope="module")
def trained(tiny_encoder, files, tmp_path_factory) -> tuple[Path, fk.api.TrainResult]:
    """6 steps over the flat CSV (varying choices), validated on the list layout, tested on the
    nested one; checkpoints at steps 4 and 6 are kept."""
    out = tmp_path_factory.mktemp("mc-run") / "model"
    result = fk.train(task="multiple-choice", model=tiny_encoder, train_file=str(files["train"]),
                      validation_file=str(files["validation"]), test_file=str(files["test"]), output_dir=str(out),
                      max_steps=6, save_steps=2, save_total_limit=2, **QUICK)
    return out, result


# -- reading ------------------------------------------------------------------------------------


def test_the_layouts_read_to_the_same_questions(files, tmp_path):
    task = new_task()
    expected = [(q, choices, answer) for q, choices, answer in TOY]
    for path in (files["train"], files["tsv"], files["validation"], files["test"]):
        questions = task.questions(read_file(path))
        assert [(q.text, q.choices, q.answer) for q in questions][:len(TOY)] == expected, path.name
    nested = task.questions(read_file(files["test"]))
    assert [q.names for q in nested] == [list(LETTERS[:len(choices)]) for _, choices, _ in TOY]
    # the label column of the run, where the nested layout has one, instead of answerKey
    relabelled = write_jsonl(tmp_path / "r.jsonl", [{**row, "label": "A"} for row in nested_rows(TOY)])
    assert [q.answer for q in task.questions(read_file(relabelled))] == [0] * len(TOY)
    # a context column goes before the question
    with_context = write_jsonl(tmp_path / "c.jsonl", [{**row, "ctx": "at night"} for row in listed_rows()])
    texts = [q.text for q in new_task(context_column="ctx").questions(read_file(with_context))]
    assert texts == [f"at night {q}" for q, _, _ in TOY]


def test_features_hold_one_sequence_per_choice_and_group_by_the_longest(tiny_encoder, files):
    from finetune_kit.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_encoder)
    task = new_task()
    raw = read_file(files["test"])
    task.setup(DatasetDict({"train": raw}), tokenizer, {"train": "test.jsonl"})
    features = prepare_features(task, raw, "train")
    first = features[0]
    assert len(first["input_ids"]) == 3 and first["labels"] == 0
    assert tokenizer.convert_ids_to_tokens(first["input_ids"][1]) == [
        "[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]", "dog", "[SEP]"]
    assert first["token_type_ids"][1] == [0] * 8 + [1] * 2
    # batching groups by the longest (question, choice) sequence, not by the number of choices
    longest = [max(len(tokenizer(q, c)["input_ids"]) for c in choices) for q, choices, _ in TOY]
    assert task.feature_lengths(features) == longest
    assert longest[2] < longest[1] and len(TOY[2][1]) < len(TOY[1][1])  # the toy tells the two apart

    # too long: the question loses its end, the choice stays whole
    short = get_task_class("multiple-choice")(task_settings({"max_length": 8}, get_task_class("multiple-choice")))
    short.load_state({}, tokenizer)
    cut = prepare_features(short, raw.select([1]), "predict")[0]["input_ids"]
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in cut][3] == [
        "[CLS]", "the", "dog", "ran", "in", "[SEP]", "blue", "[SEP]"]


# -- the model ------------------------------------------------------------------------------------


def batch_of(predictor, rows: list[dict]) -> dict:
    from datasets import Dataset

    raw = Dataset.from_list(rows)
    features = prepare_features(predictor.task, raw, "test")
    batch, _ = split_model_inputs(make_collate(predictor.task)([dict(f) for f in features]))
    return batch


def test_padded_choices_never_win_and_take_no_part_in_the_loss(trained):
    out, _ = trained
    predictor = fk.load(out)
    model = predictor.model
    batch = batch_of(predictor, listed_rows(TOY[:4]))  # 3, 4, 2 and 3 choices
    assert batch["input_ids"].shape[:2] == (4, 4)
    assert batch["choice_mask"].tolist() == [[True] * len(c) + [False] * (4 - len(c)) for _, c, _ in TOY[:4]]
    with torch.no_grad():
        output = model(**batch)
        probabilities = output.logits.softmax(-1)
        assert torch.isinf(output.logits[~batch["choice_mask"]]).all()
        assert (probabilities[~batch["choice_mask"]] == 0).all()
        # each question alone, its real choices only, through transformers' own forward
        own_losses = []
        for row, (_, choices, answer) in enumerate(TOY[:4]):
            n = len(choices)
            alone = type(model).forward(model, input_ids=batch["input_ids"][row:row + 1, :n],
                                        attention_mask=batch["attention_mask"][row:row + 1, :n],
                                        token_type_ids=batch["token_type_ids"][row:row + 1, :n],
                                        labels=torch.tensor([answer]))
            assert probabilities[row, :n].tolist() == pytest.approx(alone.logits.softmax(-1)[0].tolist(), abs=1e-5)
            own_losses.append(float(alone.loss))
    assert float(output.loss) == pytest.approx(np.mean(own_losses), abs=1e-5)


def test_with_every_choice_present_the_loss_is_transformers_own(trained):
    out, _ = trained
    predictor = fk.load(out)
    model = predictor.model
    four = [row for row in listed_rows() if len(row["choices"]) == 4]
    batch = batch_of(predictor, four)
    assert batch["choice_mask"].all()
    with torch.no_grad():
        ours = model(**batch)
        inputs = {k: v for k, v in batch.items() if k != "choice_mask"}
        theirs = type(model).forward(model, **inputs)
    assert float(ours.loss) == pytest.approx(float(theirs.loss), abs=1e-6)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-6)


def test_predictions_from_every_kind_of_input(trained):
    out, _ = trained
    predictor = fk.load(out)
    inputs = [("the cat sat", ["cat", "dog", "park"]),
              {"question": "the red film", "choices": ["red", "blue"]},
              {"question": {"stem": "the old man", "choices": [{"label": "A", "text": "old"},
                                                               {"label": "B", "text": "new"},
                                                               {"label": "C", "text": "big"}]}},
              {"question": "the dog ran", "choice0": "dog", "choice1": "cat", "choice2": "mat", "choice3": ""}]
    predictions = predictor.predict(inputs)
    choices = [["cat", "dog", "park"], ["red", "blue"], ["old", "new", "big"], ["dog", "cat", "mat"]]
    for prediction, expected in zip(predictions, choices):
        assert len(prediction["scores"]) == len(expected)
        assert sum(prediction["scores"]) == pytest.approx(1.0)
        assert prediction["choice"] == int(np.argmax(prediction["scores"]))
        assert prediction["answer"] == expected[prediction["choice"]]
    assert [set(p) for p in predictions] == [{"choice", "answer", "scores"}] * 2 + [
        {"choice", "answer", "label", "scores"}, {"choice", "answer", "scores"}]
    assert predictions[2]["label"] == "ABC"[predictions[2]["choice"]]
    # a question's scores do not depend on the other questions of its batch
    alone = predictor.predict(inputs[1:2])[0]
    assert alone["scores"] == pytest.approx(predictions[1]["scores"], abs=1e-5)
    with pytest.raises(TaskError, match="predicts from"):
        predictor.predict(["a question without choices"])


def test_the_directory_is_a_transformers_multiple_choice_model(trained):
    from transformers import AutoModelForMultipleChoice

    out, _ = trained
    manifest = json.loads((out / "finetune_kit.json").read_text())
    assert manifest["transformers_class"] == "BertForMultipleChoice"
    model, info = AutoModelForMultipleChoice.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.eval()
    predictor = fk.load(out)
    batch = batch_of(predictor, [row for row in listed_rows() if len(row["choices"]) == 3])
    with torch.no_grad():
        ours = predictor.model(**batch).logits
        plain = model(**{k: v for k, v in batch.items() if k != "choice_mask"}).logits
    assert torch.allclose(ours, plain, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: multiple-choice" in card


def test_an_architecture_without_a_multiple_choice_head_is_a_task_error():
    from transformers import DebertaConfig, DebertaModel

    encoder = DebertaModel(DebertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16))
    with pytest.raises(TaskError, match=r"^multiple-choice: transformers has no multiple-choice head for the "
                                        r"encoder's architecture \(deberta\)"):
        new_task().build_model(encoder)


# -- the run: metrics, report, card, CLI -------------------------------------------------------------


def test_metrics_and_report(trained, files, tmp_path):
    out, result = trained
    predictions = fk.load(out).predict_file(files["test"])
    right = [p["choice"] == answer for p, (_, _, answer) in zip(predictions, TOY)]
    test = result.metrics["test"]
    assert test["num_examples"] == len(TOY)
    assert test["accuracy"] == pytest.approx(np.mean(right))
    assert test["chance_accuracy"] == pytest.approx(np.mean([1 / len(c) for _, c, _ in TOY]))
    report = json.loads((out / "report.json").read_text())
    [headline] = report["splits"]["test"]["headline"]
    assert headline["metric"] == "accuracy" and headline["low"] <= headline["value"] <= headline["high"]
    assert headline["high"] > headline["low"]
    sections = {s["title"]: s for s in report["splits"]["test"]["sections"]}
    assert set(sections) == {"By position of the right answer", "By number of choices", "Most confident errors"}
    by_position = next(b for b in sections["By position of the right answer"]["blocks"] if b["kind"] == "table")
    gold = Counter(LETTERS[answer] for _, _, answer in TOY)
    assert {row[0]: row[1] for row in by_position["rows"] if row[1]} == dict(gold)
    by_count = next(b for b in sections["By number of choices"]["blocks"] if b["kind"] == "table")
    assert [row[:2] for row in by_count["rows"]] == [[2, 2], [3, 3], [4, 3]]  # choices, questions
    errors = sections["Most confident errors"]["blocks"][0]
    assert len(errors["rows"]) == right.count(False)
    for row in errors["rows"]:
        question, choices, answer = TOY[row[0] - 1]  # the line of a JSON Lines row
        assert row[1] == question and row[4] == f"{LETTERS[answer]}: {choices[answer]}"
    # the model card's account of the data: where the right answers are
    card = (out / "README.md").read_text()
    assert "pipeline_tag: multiple-choice" in card
    assert new_task().label_counts(read_file(files["test"])) == {k: gold[k] for k in sorted(gold)}


def test_cli_predict_and_evaluate(trained, files, tmp_path):
    out, result = trained
    written = tmp_path / "predictions.jsonl"
    done = CliRunner().invoke(app, ["predict", str(out), "--input", str(files["train"]), "--output", str(written)])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    assert len(lines) == 2 * len(TOY) and [len(p["scores"]) for p in lines[:len(TOY)]] == [len(c) for _, c, _ in TOY]
    batch_size = json.loads((out / "finetune_kit.json").read_text())["config"]["eval_batch_size"]
    evaluated = fk.evaluate(out, files["validation"], tmp_path / "eval", batch_size=batch_size)
    validation = dict(result.metrics["validation"])
    assert evaluated.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert evaluated == validation


# -- LoRA, resume, two processes ---------------------------------------------------------------------


def test_lora_saves_the_head_and_loads_and_merges(tiny_encoder, files, tmp_path):
    out = tmp_path / "lora"
    fk.train(task="multiple-choice", model=tiny_encoder, train_file=str(files["train"]), output_dir=str(out),
             lora=True, max_steps=2, **{**QUICK, "learning_rate": 1e-2})
    saved = load_file(out / "adapter_model.safetensors")
    assert not (out / "model.safetensors").exists()
    for head in ("classifier", "pooler"):
        assert any(f".{head}." in name for name in saved), head
    inputs = [(q, choices) for q, choices, _ in TOY[:3]]
    predicted = fk.load(out).predict(inputs)
    assert fk.load(out).predict(inputs) == predicted
    merged = fk.export(out, tmp_path / "merged", merge=True)
    for mine, theirs in zip(fk.load(merged).predict(inputs), predicted):
        assert mine["choice"] == theirs["choice"]
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-4)


def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(trained, tiny_encoder, files, tmp_path):
    out, result = trained
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "checkpoints" / "step-6")
    resumed = fk.train(task="multiple-choice", model=tiny_encoder, train_file=str(files["train"]),
                       validation_file=str(files["validation"]), test_file=str(files["test"]), output_dir=str(copy),
                       max_steps=6, save_steps=2, save_total_limit=2, resume=True, **QUICK)
    assert resumed.global_step == 6
    reference = load_file(out / "checkpoints" / "step-6" / "model.safetensors")
    again = load_file(copy / "checkpoints" / "step-6" / "model.safetensors")
    assert reference.keys() == again.keys()
    assert [name for name in reference if not torch.equal(reference[name], again[name])] == []
    assert resumed.metrics == result.metrics


@two_process_run("multiple-choice")
def plan_two_processes(directory: Path, encoder: str) -> list[str]:
    train = write_csv(directory / "train.csv", flat_rows() * 2, FLAT_FIELDS)
    dev = write_jsonl(directory / "dev.jsonl", listed_rows(TOY[:7]))
    return ["--task", "multiple-choice", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--max-steps", "2", "--batch-size", "4", "--eval-batch-size", "2",
            "--max-length", "32", "--learning-rate", "1e-2"]


def test_two_processes_evaluate_like_one(two_process_runs, tmp_path):
    """7 validation questions of 2 to 4 choices in batches of 2: the processes' batches differ in
    their number of choices, and the last round is uneven."""
    run = two_process_runs["multiple-choice"].check()
    validation = validation_metrics(run.out)
    assert validation["num_examples"] == 7
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=2)
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert single == pytest.approx(validation)


# -- bad data ------------------------------------------------------------------------------------------


def bad_case(tmp_path: Path, name: str) -> tuple[Path, list[str], str]:
    """A training file whose second row is bad, the options given, and the message expected after
    the file's name."""
    if name == "answer key":
        rows = nested_rows(TOY[:3])
        rows[1]["answerKey"] = "E"
        return (write_jsonl(tmp_path / "bad.jsonl", rows), [],
                "line 2: answerKey 'E' is not one of the choice labels (A, B, C, D)")
    if name == "count":
        return (write_csv(tmp_path / "bad.csv", flat_rows(TOY[:3]), FLAT_FIELDS), ["-o", "num_choices=3"],
                "line 3: 4 choices; num_choices is 3")
    if name == "range":
        rows = flat_rows(TOY[:3])
        rows[1]["label"] = 4
        return (write_csv(tmp_path / "bad.csv", rows, FLAT_FIELDS), [],
                "line 3: label 4 is out of range: 4 choices, indices 0 to 3")
    if name == "one choice":
        return (write_jsonl(tmp_path / "bad.jsonl", listed_rows([TOY[0], ("the cat", ["cat"], 0)])), [],
                "line 2: 1 choice; a question needs at least 2")
    rows = flat_rows(TOY[:3])  # "gap": an empty choice before a given one
    rows[1]["choice1"] = ""
    return write_csv(tmp_path / "bad.csv", rows, FLAT_FIELDS), [], "line 3: column 'choice1' is empty"


@pytest.mark.parametrize("name", ["answer key", "count", "range", "one choice", "gap"])
def test_bad_data_is_a_one_line_error_naming_file_and_line(tiny_encoder, tmp_path, name):
    path, options, message = bad_case(tmp_path, name)
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["train", "--task", "multiple-choice", "--model", tiny_encoder, "--train", str(path),
                                    "--output", str(out), *options])
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert lines == [f"error: {path} {message}"]
    assert not out.exists()


def test_an_unknown_layout_names_the_layouts(tmp_path):
    path = write_csv(tmp_path / "plain.csv", [{"question": "the cat", "answer": "cat", "label": 0}])
    with pytest.raises(fk.task.DataError, match=r"plain.csv: no choices found; give columns choice0, choice1, \.\.\. "
                                                r"or a 'choices' list column"):
        new_task().validate(read_file(path), "train", str(path))


# -- real data -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "commonsenseqa").is_dir(), reason="needs ../shared/data/commonsenseqa")
def test_commonsenseqa_reads_and_validates_whole():
    """Both files, every row (SOURCE.md gives the counts)."""
    task = new_task(num_choices=5)
    expected = {"train_rand_split.jsonl": (9741, {"A": 1909, "B": 1973, "C": 1946, "D": 1985, "E": 1928}),
                "dev_rand_split.jsonl": (1221, {"A": 239, "B": 255, "C": 241, "D": 251, "E": 235})}
    for name, (count, answers) in expected.items():
        path = SHARED_DATA / "commonsenseqa" / name
        raw = read_file(path)
        task.validate(raw, "train", str(path))
        assert len(raw) == count
        assert task.label_counts(raw) == answers
