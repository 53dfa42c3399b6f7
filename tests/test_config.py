from pathlib import Path

import pytest

from finetune_kit.config import ConfigError, TrainConfig, apply_overrides, load_config

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
