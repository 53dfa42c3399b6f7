"""Which way a metric improves: declared by the task (``lower_is_better``), or set by the run
(``greater_is_better``); never read from the metric's name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from finetune_kit_tasks.masked_lm import MaskedLMTask
from finetune_kit_tasks.text_classification import TextClassificationTask
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.checkpoints import ResumeError, check_settings, run_settings
from finetune_kit.cli import app
from finetune_kit.config import ConfigError, TrainConfig
from finetune_kit.registry import as_task_class, available_tasks, get_task_class
from finetune_kit.task import TaskError, greater_is_better
from tests.conftest import NEGATIVE, POSITIVE, REPO

TEXTS = POSITIVE + NEGATIVE


class OlderPlugin:
    """A third-party task that gives its default metric's direction with ``greater_is_better``
    alone, without ``lower_is_better``."""

    name: ClassVar[str] = "older-plugin"
    default_metric: ClassVar[str] = "mse"
    greater_is_better: ClassVar[bool] = False


class UndeclaredPlugin:
    name: ClassVar[str] = "undeclared-plugin"
    default_metric: ClassVar[str] = "hamming_loss"


# As the registry hands them to the core: with TaskBase's defaults for what they do not declare.
OlderPlugin = as_task_class(OlderPlugin)
UndeclaredPlugin = as_task_class(UndeclaredPlugin)


@pytest.mark.parametrize(("metric", "higher_is_better"), [
    ("perplexity", False), ("mlm_loss", False), ("sbo_loss", False), ("loss", False),
    ("accuracy", True), ("sbo_accuracy", True),
])
def test_masked_lm_declares_its_losses_and_perplexity_lower_is_better(metric, higher_is_better):
    assert greater_is_better(MaskedLMTask, metric) is higher_is_better


def test_an_undeclared_metric_is_higher_is_better_whatever_its_name():
    assert greater_is_better(TextClassificationTask, "macro_f1") is True
    assert greater_is_better(TextClassificationTask, "loss") is False
    assert greater_is_better(TextClassificationTask, "hinge_loss") is True  # not declared: the name says nothing
    assert greater_is_better(UndeclaredPlugin, "hamming_loss") is True


def test_the_run_setting_overrides_the_declaration_both_ways():
    assert greater_is_better(MaskedLMTask, "perplexity", True) is True
    assert greater_is_better(TextClassificationTask, "accuracy", False) is False
    assert greater_is_better(TextClassificationTask, "hinge_loss", False) is False
    assert greater_is_better(TextClassificationTask, "loss", True) is True


def test_a_plugin_with_only_greater_is_better_keeps_its_default_metric_direction():
    assert greater_is_better(OlderPlugin, "mse") is False
    assert greater_is_better(OlderPlugin, "loss") is False
    assert greater_is_better(OlderPlugin, "pearson") is True
    higher_f1 = as_task_class(type("HigherF1", (), {"default_metric": "f1", "greater_is_better": True}))
    assert greater_is_better(higher_f1, "f1") is True


def test_the_example_plugin_declares_its_errors_lower_is_better(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "plugin_example"))
    from finetune_kit_example_plugin import TextRegressionTask

    assert [greater_is_better(TextRegressionTask, m) for m in ("mse", "mae", "loss", "pearson")] == \
        [False, False, False, True]


@pytest.mark.parametrize("name", [n for n in available_tasks() if n != "text-regression"])
def test_each_builtin_default_metric_keeps_its_direction(name):
    task = get_task_class(name)
    assert greater_is_better(task, task.default_metric) is (name != "masked-lm")  # perplexity; the others score


def test_a_declaration_given_as_one_string_is_a_task_error():
    plugin = SimpleNamespace(name="my-task", default_metric="mse", lower_is_better="mse")
    with pytest.raises(TaskError, match=re.escape("my-task: lower_is_better is the string 'mse'; declare a set of "
                                                  "metric names, e.g. frozenset({'mse'})")):
        greater_is_better(plugin, "mse")


def _config(tmp_path: Path, **settings: Any) -> TrainConfig:
    return TrainConfig(task="masked-lm", model="m", output_dir=str(tmp_path / "out"), train_file="t.txt", **settings)


def test_the_setting_takes_true_false_or_null_only(tmp_path):
    with pytest.raises(ConfigError, match=r"^greater_is_better: 'lower' is not allowed; expected null or true/false$"):
        _config(tmp_path, greater_is_better="lower")


def test_a_resume_must_keep_the_direction(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-4"
    saved = {"settings": run_settings(_config(tmp_path, metric_for_best="perplexity"), 1)}
    current = run_settings(_config(tmp_path, metric_for_best="perplexity", greater_is_better=True), 1)
    with pytest.raises(ResumeError, match=re.escape(
            "was written with greater_is_better=None but this run has greater_is_better=True")):
        check_settings(checkpoint, saved, current, "resume")


@pytest.mark.parametrize(("flag", "expected"), [("--lower-is-better", False), ("--greater-is-better", True),
                                                (None, None)])
def test_the_cli_option_reaches_the_config(monkeypatch, tmp_path, flag, expected):
    seen: list[TrainConfig] = []

    def run_training(config: TrainConfig) -> SimpleNamespace:
        seen.append(config)
        return SimpleNamespace(output_dir=config.output_dir)

    monkeypatch.setattr(fk.api, "run_training", run_training)
    args = ["train", "--task", "masked-lm", "--model", "m", "--train", "t.txt", "--output", str(tmp_path / "out"),
            "--metric-for-best", "accuracy", *([flag] if flag else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen[0].metric_for_best == "accuracy" and seen[0].greater_is_better is expected


def test_a_bad_direction_override_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["train", "--task", "masked-lm", "--model", "m", "--train", "t.txt",
                                      "--output", str(tmp_path / "out"), "greater_is_better=maybe"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: greater_is_better: 'maybe' is not allowed; expected null or true/false"
    assert not (tmp_path / "out").exists()


def _text_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("setting", "pick"), [(None, min), (True, max)])
def test_the_best_checkpoint_follows_the_direction(tiny_encoder, tmp_path, setting, pick):
    """masked-lm picked by perplexity: the lowest by the task's declaration, the highest when
    the run says higher is better; the weights saved are those of that evaluation."""
    train = _text_file(tmp_path / "train.txt", TEXTS * 4)
    validation = _text_file(tmp_path / "validation.txt", TEXTS)
    out = tmp_path / "out"
    result = fk.train(task="masked-lm", model=tiny_encoder, train_file=str(train),
                      validation_file=str(validation), output_dir=str(out), epochs=3, batch_size=4,
                      max_length=24, learning_rate=2e-3, metric_for_best="perplexity", greater_is_better=setting,
                      bootstrap_resamples=0, report_plots=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    evaluations = [r for r in log if r["event"] == "evaluate"]
    perplexities = [r["metrics"]["perplexity"] for r in evaluations]
    assert len(evaluations) == 3 and perplexities[0] > min(perplexities)  # it went down after the first epoch
    chosen = pick(evaluations, key=lambda r: r["metrics"]["perplexity"])
    end = log[-1]
    assert end["event"] == "train_end" and end["metric_for_best"] == "perplexity"
    assert (end["best_step"], end["best_metric"]) == (chosen["step"], chosen["metrics"]["perplexity"])
    assert end["greater_is_better"] is (setting is True)
    assert result.metrics["validation"]["perplexity"] == pytest.approx(chosen["metrics"]["perplexity"], rel=1e-4)


def test_a_metric_for_best_the_task_does_not_report_is_a_one_line_error(tiny_encoder, sentiment_files, tmp_path):
    with pytest.raises(ConfigError, match=r"metric_for_best: 'no_such_metric' is not among the metrics \(.*accuracy"):
        fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
                 validation_file=str(sentiment_files["validation"]), output_dir=str(tmp_path / "out"), epochs=1,
                 metric_for_best="no_such_metric")
