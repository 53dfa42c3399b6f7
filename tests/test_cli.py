"""The command line through typer's CliRunner."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune_kit.cli import app
from tests.conftest import NEGATIVE, POSITIVE, write_csv

runner = CliRunner()


def _train_args(tiny_encoder, files, out, *extra):
    return ["train", "--task", "text-classification", "--model", tiny_encoder, "--train", str(files["train"]),
            "--validation", str(files["validation"]), "--output", str(out), "--batch-size", "8", *extra]


def test_tasks_lists_builtins_with_origin():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0
    assert "text-classification" in result.output and "pair-classification" in result.output
    assert "finetune-kit" in result.output


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "tasks", "demo", "embed"])
def test_help_is_complete(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    expected = {"train": ["--task", "--model", "--train", "--validation", "--test", "--output", "--epochs",
                          "--batch-size", "--learning-rate", "--max-length", "--seed", "--text-column",
                          "--text-pair-column", "--label-column", "--warmup-ratio", "--gradient-accumulation-steps",
                          "--mixed-precision", "--early-stopping-patience", "--eval-steps", "--task-option",
                          "--crf", "--masking", "--file-format"],
                "evaluate": ["MODEL_DIR", "--data", "--output"],
                "predict": ["MODEL_DIR", "--input", "--output"],
                "tasks": [], "demo": ["--output", "--epochs", "--model"],
                "embed": ["MODEL_OR_DIR", "--input", "--output", "--level", "--layer", "--word-pooling",
                          "--text-pooling", "--batch-size", "--max-length", "--stride"]}[command]
    for option in expected:
        assert option in result.output, option
    if command == "train":  # defaults are shown, not swallowed as markup
        assert "(default: the task's: text; tokens for tagging)" in result.output
        assert "(default: 5e-5)" in result.output


def test_train_predict_evaluate_round_trip(tiny_encoder, sentiment_files, tmp_path: Path):
    out = tmp_path / "model"
    result = runner.invoke(app, _train_args(tiny_encoder, sentiment_files, out, "--epochs", "10",
                                            "--learning-rate", "3e-3", "--test", str(sentiment_files["test"])))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"validation", "test"}

    # predict: labels in the input are ignored; one line per input, in input order
    inputs = write_csv(tmp_path / "in.csv", [{"text": t} for t in POSITIVE[:3] + NEGATIVE[:3]])
    result = runner.invoke(app, ["predict", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(set(line) == {"label", "score"} for line in lines)
    from finetune_kit import load

    assert lines == load(out).predict(POSITIVE[:3] + NEGATIVE[:3])

    result = runner.invoke(app, ["evaluate", str(out), "--data", str(sentiment_files["test"]),
                                 "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "report" / "metrics.json").read_text())["test"]
    assert evaluated["accuracy"] == metrics["test"]["accuracy"]
    assert "Confusion matrix" in result.output


def test_train_from_yaml_with_overrides(tiny_encoder, sentiment_files, tmp_path: Path):
    card = tmp_path / "card.yaml"
    card.write_text(f"task: text-classification\nmodel: {tiny_encoder}\ntrain_file: {sentiment_files['train']}\n"
                    f"output_dir: {tmp_path / 'm'}\nepochs: 5\nbatch_size: 8\n")
    result = runner.invoke(app, ["train", str(card), "max_steps=2", "seed=3"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())
    assert manifest["config"]["max_steps"] == 2 and manifest["config"]["seed"] == 3
    assert manifest["config"]["epochs"] == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--text-column", "sentence"], "error: .*train.csv: column 'sentence' not found"),
        (["--batch-size", "0"], "error: batch_size: 0 is not allowed"),
        (["--task-option", "colour=red"], "error: task_options: colour not known to text-classification"),
        (["nonsense"], "error: unexpected argument 'nonsense'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_encoder, sentiment_files, tmp_path: Path, extra, message):
    result = runner.invoke(app, _train_args(tiny_encoder, sentiment_files, tmp_path / "m", *extra))
    assert result.exit_code == 2
    import re

    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_predict_on_malformed_input_keeps_existing_output(tiny_encoder, sentiment_files, tmp_path: Path):
    out = tmp_path / "model"
    assert runner.invoke(app, _train_args(tiny_encoder, sentiment_files, out, "--max-steps", "1")).exit_code == 0
    previous = tmp_path / "p.jsonl"
    previous.write_text("keep me\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("text\n\"unclosed\n")
    result = runner.invoke(app, ["predict", str(out), "--input", str(bad), "--output", str(previous)])
    assert result.exit_code == 2 and "bad.csv" in result.output
    assert previous.read_text() == "keep me\n"


def test_evaluate_missing_model_dir(tmp_path: Path, sentiment_files):
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--data", str(sentiment_files["test"])])
    assert result.exit_code == 2 and "not a finetune-kit model directory" in result.output
