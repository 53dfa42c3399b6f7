"""The command line through typer's CliRunner."""

import dataclasses
import json
import re
from importlib.metadata import EntryPoint
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Optional

import pytest
import typer
from typer.testing import CliRunner

from finetune_kit import registry, train_options
from finetune_kit.cli import app
from finetune_kit.config import TrainConfig, declared_settings, load_config, setting
from finetune_kit.task import task_shortcuts
from finetune_kit.task_options import TaskOption
from tests.conftest import NEGATIVE, POSITIVE, write_csv
from tests.test_task_contract import MinimalTask

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
                          "--file-format"],
                "evaluate": ["MODEL_DIR", "--data", "--output"],
                "predict": ["MODEL_DIR", "--input", "--output"],
                "tasks": [], "demo": ["--output", "--epochs", "--model"],
                "embed": ["MODEL_OR_DIR", "--input", "--output", "--level", "--layer", "--word-pooling",
                          "--text-pooling", "--batch-size", "--max-length", "--stride"]}[command]
    for option in expected:
        assert option in result.output, option
    if command == "train":  # defaults are shown, not swallowed as markup
        assert "(default: the task's, shown by `finetune-kit tasks NAME`)" in result.output
        assert "(default: 5e-5)" in result.output
        assert "shortcut" in result.output  # where a task's shortcuts and -o options are listed


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


# -- train's options come from the settings' declarations ------------------------------------------

def train_command() -> Any:
    return typer.main.get_command(app).commands["train"]


def test_every_setting_is_an_option_of_train_with_its_declared_help():
    options = {param.name: param for param in train_command().params if param.name != "args"}
    assert list(options) == [s.name for s in declared_settings()]  # every field, -o included, in field order
    for declared in declared_settings():
        option = options[declared.name]
        names = {name for decl in declared.options for name in decl.split("/")}
        assert set(option.opts) | set(option.secondary_opts) == names, declared.name
        assert option.help == declared.help_text, declared.name
        assert option.default is None, declared.name  # not given: the YAML file, the overrides or the default apply


@dataclasses.dataclass(frozen=True)
class ExtendedConfig(TrainConfig):
    warmup_steps: int | None = setting(None, help="Optimizer steps of linear warm-up", unset="warmup_ratio's")


def test_a_new_setting_needs_only_its_declaration(monkeypatch):
    monkeypatch.setattr(train_options, "declared_settings", lambda: declared_settings(ExtendedConfig))
    received: dict[str, Any] = {}
    new_app = typer.Typer()

    @new_app.command(context_settings=train_options.PASS_UNKNOWN_OPTIONS)
    @train_options.with_setting_options
    def command(args: Optional[list[str]] = typer.Argument(None), **given: Any) -> None:
        received.update(train_options.given_settings(given))

    shown = runner.invoke(new_app, ["--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert "--warmup-steps" in shown.output
    assert "Optimizer steps of linear warm-up (default: warmup_ratio's)." in shown.output
    result = runner.invoke(new_app, ["--warmup-steps", "7", "--lora-target-modules", "query,value"])
    assert result.exit_code == 0, result.output
    assert received == {"warmup_steps": 7, "lora_target_modules": ["query", "value"]}


# -- task shortcuts ---------------------------------------------------------------------------------

@pytest.fixture
def handed_over(monkeypatch) -> dict[str, Any]:
    """What `finetune-kit train` hands to the API's train (which is not run)."""
    seen: dict[str, Any] = {}

    def fake_train(config: Any = None, overrides: Any = None, **settings: Any) -> SimpleNamespace:
        seen.update(config=config, overrides=overrides, settings=settings)
        return SimpleNamespace(output_dir="out")

    monkeypatch.setattr("finetune_kit.api.train", fake_train)
    return seen


RUN = ("--model", "m", "--train", "t.csv", "--output", "out")


@pytest.mark.parametrize(("args", "options", "overrides"), [
    (["--task", "token-classification", "--crf"], {"crf": True}, []),
    (["--task", "masked-lm", "--masking", "span"], {"masking": "span"}, []),
    (["--task", "masked-lm", "--masking=span"], {"masking": "span"}, []),
    (["--masking", "whole-word", "--task", "masked-lm"], {"masking": "whole-word"}, []),
    (["--task", "masked-lm", "--masking", "span", "-o", "masking=token", "-o", "sbo=true"],
     {"masking": "span", "sbo": True}, []),  # a shortcut beats -o
    (["task=token-classification", "--crf", "epochs=2"], {"crf": True}, ["task=token-classification", "epochs=2"]),
])
def test_a_task_shortcut_sets_its_task_option(handed_over, args, options, overrides):
    result = runner.invoke(app, ["train", *RUN, *args])
    assert result.exit_code == 0, result.output
    assert handed_over["settings"]["task_options"] == options
    assert handed_over["overrides"] == overrides


def test_a_shortcut_of_the_task_named_in_the_yaml_file(handed_over, tmp_path: Path):
    card = tmp_path / "card.yaml"
    card.write_text("task: masked-lm\nmodel: m\ntrain_file: t.txt\noutput_dir: out\n")
    result = runner.invoke(app, ["train", "--masking", "span", str(card), "epochs=2"])
    assert result.exit_code == 0, result.output
    assert handed_over == {"config": str(card), "overrides": ["epochs=2"],
                           "settings": {"task_options": {"masking": "span"}}}


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "text-classification", "--epoch", "3"], "error: --epoch: no such option (did you mean --epochs?)"),
    (["--task", "masked-lm", "--maskin", "span"], "error: --maskin: no such option (did you mean --masking?)"),
    (["--task", "text-classification", "--crf"],
     "error: --crf: a shortcut of token-classification, not of text-classification"),
    (["--crf"], "error: --crf: a shortcut of token-classification; give --task token-classification"),
    (["--task", "masked-lm", "--masking"], "error: --masking: a value is missing; give token or whole-word or span"),
    (["--task", "token-classification", "--crf=true"],
     "error: --crf: a flag, it takes no value (-o crf=VALUE sets one)"),
    (["--task", "no-such-task", "--crf"], "error: unknown task 'no-such-task'. Available tasks: "),
])
def test_an_unknown_option_is_a_one_line_error(handed_over, args, message):
    result = runner.invoke(app, ["train", *RUN, *args])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), result.output
    assert handed_over == {}


class ShortcutTask(MinimalTask):
    """A plugin whose options have shortcuts of `finetune-kit train`."""

    name: ClassVar[str] = "shortcut-plugin"
    task_options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("window", 3, "words on each side", kind="int", minimum=1, shortcut="--window"),
        TaskOption("lowercase", False, "lowercase the texts", kind="flag", shortcut="--lowercase"),
    )


@pytest.fixture
def shortcut_plugin(monkeypatch) -> None:
    builtin = registry._entry_points()
    plugin = EntryPoint(name=ShortcutTask.name, value="tests.test_cli:ShortcutTask", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {**builtin, ShortcutTask.name: plugin})


def test_a_plugin_declares_shortcuts_without_a_change_to_the_core(shortcut_plugin, handed_over):
    result = runner.invoke(app, ["train", *RUN, "--task", "shortcut-plugin", "--window", "5", "--lowercase"])
    assert result.exit_code == 0, result.output
    assert handed_over["settings"]["task_options"] == {"window": 5, "lowercase": True}
    config = load_config(None, handed_over["overrides"], **handed_over["settings"])
    assert config.task_options == {"window": 5, "lowercase": True}

    result = runner.invoke(app, ["train", *RUN, "--task", "shortcut-plugin", "--windw", "5"])
    assert result.output.strip() == "error: --windw: no such option (did you mean --window?)"
    result = runner.invoke(app, ["train", *RUN, "--task", "text-classification", "--window", "5"])
    assert result.output.strip() == "error: --window: a shortcut of shortcut-plugin, not of text-classification"


def test_the_readme_options_table_names_real_options():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("`finetune-kit train --help` has one option per", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"--[a-z][a-z-]*", table))
    shortcuts = {flag for name in registry.available_tasks() for flag in task_shortcuts(registry.get_task_class(name))}
    assert named and named <= set(train_options.train_option_names()) | shortcuts
