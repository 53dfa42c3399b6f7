import dataclasses
import math
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune_kit.cli import app
from finetune_kit.config import NUMERIC_BOUNDS, ConfigError, TrainConfig, _allowed_types, apply_overrides, load_config

BASE = {"task": "text-classification", "model": "m", "output_dir": "out", "train_file": "t.csv"}


def test_defaults_match_the_documented_recipe():
    config = load_config(**BASE)
    assert (config.batch_size, config.learning_rate, config.max_length, config.seed) == (32, 5e-5, None, 42)
    assert config.group_by_length is True


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, r"batch_size: 0 is not allowed; it must be greater than 0"),
        ({"learning_rate": -1.0}, r"learning_rate: -1.0 is not allowed"),
        ({"mixed_precision": "fp8"}, r"mixed_precision: 'fp8' is not allowed; choose one of no, fp16, bf16"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio: 1.5 is not allowed; it must be in \[0, 1\)"),
        ({"batch_size": "big"}, r"batch_size: 'big' is not allowed; expected int"),
        ({"group_by_length": "yes"}, r"group_by_length: 'yes' is not allowed; expected true/false"),
        ({"file_format": "xml"}, r"file_format: 'xml' is not allowed; choose one of auto, csv, tsv, jsonl"),
        ({"batch_sise": 8}, r"batch_sise: unknown setting \(did you mean 'batch_size'\?\)"),
    ],
)
def test_invalid_settings_name_field_value_and_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_config(**{**BASE, **changes})


def test_missing_required_setting():
    with pytest.raises(ConfigError, match="model: missing; it is required"):
        load_config(task="text-classification", output_dir="o", train_file="t.csv")


def test_train_data_required():
    with pytest.raises(ConfigError, match="train_file: missing"):
        load_config(task="text-classification", model="m", output_dir="o")


def test_yaml_then_overrides_then_keywords(tmp_path: Path):
    card = tmp_path / "card.yaml"
    card.write_text("task: text-classification\nmodel: m\noutput_dir: out\ntrain_file: t.csv\n"
                    "epochs: 5\nbatch_size: 8\nlearning_rate: 1e-4\ntask_options:\n  a: 1\n")
    config = load_config(card, ["epochs=2", "text_column=123", "task_options.b=true"], batch_size=16)
    assert config.epochs == 2  # override beats YAML
    assert config.batch_size == 16  # explicit keyword beats both
    assert config.learning_rate == 1e-4  # YAML beats default
    assert config.text_column == "123"  # a string setting stays a string
    assert config.task_options == {"a": 1, "b": True}


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    card = tmp_path / "bad.yaml"
    card.write_text("task: x\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(card)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["epochs"])


def test_config_is_frozen_and_round_trips():
    config = load_config(**BASE)
    with pytest.raises(AttributeError):
        config.epochs = 1  # type: ignore[misc]
    assert TrainConfig(**config.to_dict()) == config


def numeric_fields() -> list[str]:
    """The int and float settings (true/false ones left out)."""
    hints = typing.get_type_hints(TrainConfig)
    return [f.name for f in dataclasses.fields(TrainConfig)
            if {int, float} & set(_allowed_types(hints[f.name])) and bool not in _allowed_types(hints[f.name])]


def float_fields() -> list[str]:
    hints = typing.get_type_hints(TrainConfig)
    return [name for name in numeric_fields() if float in _allowed_types(hints[name])]


def test_every_numeric_setting_says_what_it_allows():
    assert set(NUMERIC_BOUNDS) == set(numeric_fields())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": math.nan}, "epochs: nan is not allowed; it must be a finite number greater than 0"),
        ({"epochs": math.inf}, "epochs: inf is not allowed; it must be a finite number greater than 0"),
        ({"learning_rate": math.nan}, "learning_rate: nan is not allowed; it must be a finite number greater than 0"),
        ({"warmup_ratio": -math.inf}, "warmup_ratio: -inf is not allowed; it must be a finite number in [0, 1)"),
        ({"max_grad_norm": -1.0}, "max_grad_norm: -1.0 is not allowed; it must be >= 0"),
        ({"learning_rate": 0.0}, "learning_rate: 0.0 is not allowed; it must be greater than 0"),
        ({"head_learning_rate": -1e-5}, "head_learning_rate: -1e-05 is not allowed; it must be greater than 0"),
        ({"epochs": 0}, "epochs: 0 is not allowed; it must be greater than 0"),
        ({"weight_decay": -0.01}, "weight_decay: -0.01 is not allowed; it must be >= 0"),
        ({"warmup_ratio": -0.1}, "warmup_ratio: -0.1 is not allowed; it must be in [0, 1)"),
        ({"lora_dropout": 1.0}, "lora_dropout: 1.0 is not allowed; it must be in [0, 1)"),
        ({"validation_fraction": 0.0}, "validation_fraction: 0.0 is not allowed; it must be in (0, 1)"),
        ({"validation_fraction": 1}, "validation_fraction: 1 is not allowed; it must be in (0, 1)"),
        ({"seed": -1}, "seed: -1 is not allowed; it must be in [0, 4294967295]"),
        ({"seed": 2**32}, "seed: 4294967296 is not allowed; it must be in [0, 4294967295]"),
    ],
)
def test_numeric_settings_out_of_range_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError) as error:
        load_config(**{**BASE, **changes})
    assert str(error.value) == message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", float_fields())
def test_no_float_setting_takes_a_non_finite_value(name, value):
    with pytest.raises(ConfigError) as error:
        load_config(**{**BASE, name: value})
    assert str(error.value).startswith(f"{name}: {value!r} is not allowed; it must be a finite number ")


def test_boundary_values_are_allowed():
    config = load_config(**{**BASE, "max_grad_norm": 0.0, "weight_decay": 0.0, "warmup_ratio": 0.0,
                            "lora_dropout": 0.0, "seed": 2**32 - 1, "train_top_layers": 0, "save_total_limit": 0})
    assert (config.max_grad_norm, config.seed) == (0.0, 2**32 - 1)


@pytest.mark.parametrize(("line", "message"), [
    ("epochs: .nan", "epochs: nan is not allowed; it must be a finite number greater than 0"),
    ("epochs: nan", "epochs: nan is not allowed; it must be a finite number greater than 0"),
    ("learning_rate: .inf", "learning_rate: inf is not allowed; it must be a finite number greater than 0"),
    ("max_grad_norm: -1", "max_grad_norm: -1 is not allowed; it must be >= 0"),
    ("task_options: 5", "task_options: 5 is not allowed; expected a mapping of option: value"),
    ("task_options: [crf]", "task_options: ['crf'] is not allowed; expected a mapping of option: value"),
])
def test_yaml_values_out_of_range_are_one_line_errors(tmp_path: Path, line, message):
    card = tmp_path / "card.yaml"
    card.write_text("task: text-classification\nmodel: m\noutput_dir: out\ntrain_file: t.csv\n" + line + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(card)
    assert str(error.value) == message


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "nan"], "error: epochs: nan is not allowed; it must be a finite number greater than 0"),
    (["--epochs", "inf"], "error: epochs: inf is not allowed; it must be a finite number greater than 0"),
    (["--learning-rate", "nan"],
     "error: learning_rate: nan is not allowed; it must be a finite number greater than 0"),
    (["--max-grad-norm", "-1"], "error: max_grad_norm: -1.0 is not allowed; it must be >= 0"),
    (["--seed", "-1"], "error: seed: -1 is not allowed; it must be in [0, 4294967295]"),
    (["epochs=.nan"], "error: epochs: nan is not allowed; it must be a finite number greater than 0"),
])
def test_cli_rejects_bad_numbers_with_one_line(tmp_path: Path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--task", "text-classification", "--model", "m", "--train", "t.csv",
                                      "--output", str(out), *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [message]
    assert not out.exists()


def test_cli_rejects_a_yaml_card_with_a_scalar_for_task_options(tmp_path: Path):
    card = tmp_path / "card.yaml"
    card.write_text(f"task: text-classification\nmodel: m\noutput_dir: {tmp_path / 'out'}\ntrain_file: t.csv\n"
                    "task_options: 5\n")
    result = CliRunner().invoke(app, ["train", str(card)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: task_options: 5 is not allowed; expected a mapping of option: value"]
