import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune_kit.cli import app
from finetune_kit.config import (
    CARD_SETTINGS,
    COMPARED_SETTINGS,
    DECLARATION,
    NUMERIC_BOUNDS,
    POSITIVE,
    ConfigError,
    TrainConfig,
    _allowed_types,
    apply_overrides,
    declared_settings,
    load_config,
    setting,
)

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
        ({"mixed_precision": "fp8"}, r"^mixed_precision: 'fp8' is not allowed; choose one of no, fp16, bf16, auto$"),
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


# -- each setting declared once: type, default and help on its field ------------------------------

def test_every_field_declares_a_one_line_help():
    settings = declared_settings()
    assert [s.name for s in settings] == [f.name for f in dataclasses.fields(TrainConfig)]
    for declared in settings:
        assert declared.help and "\n" not in declared.help and not declared.help.endswith("."), declared.name
    names = [name for s in settings for decl in s.options for name in decl.split("/")]
    assert len(names) == len(set(names))  # no option name given twice


@pytest.mark.parametrize(("name", "help_ends"), [
    ("epochs", "(default: 3)."),
    ("learning_rate", "(default: 5e-5)."),
    ("lora_dropout", "(default: 0.1)."),
    ("mixed_precision", "(default: no)."),
    ("lora", "(default: off)."),
    ("group_by_length", "(default: on)."),
    ("max_steps", "(default: run all epochs)."),  # None: what it means, as declared
    ("max_length", "(default: the task's, shown by `finetune-kit tasks NAME`)."),
    ("task", "lists them."),  # required: no default
    ("task_options", "shortcuts."),
])
def test_the_help_shows_the_field_default(name, help_ends):
    assert {s.name: s for s in declared_settings()}[name].help_text.endswith(help_ends)


def test_a_default_change_on_the_field_changes_the_help():
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "batch_size")
    declared = dataclasses.replace(field.metadata[DECLARATION], name="batch_size", default=16)
    assert declared.help_text.endswith("(default: 16).")


def test_no_help_names_what_a_built_in_task_does():
    words = ("tagging", "question answering", "QA", "384", "perplexity", "tokens for", "CRF")
    for declared in declared_settings():
        assert not [w for w in words if w in declared.help_text], declared.name


def test_a_new_field_is_a_new_setting():
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        warmup_steps: typing.Optional[int] = setting(None, help="Optimizer steps of linear warm-up",
                                                     unset="warmup_ratio's", card=True, compared=True,
                                                     bounds=POSITIVE)

    added = declared_settings(Extended)[-1]
    assert (added.name, added.value_type, added.default, added.options) == ("warmup_steps", int, None,
                                                                            ("--warmup-steps",))
    assert (added.card, added.compared, added.bounds) == (True, True, POSITIVE)
    assert added.help_text == "Optimizer steps of linear warm-up (default: warmup_ratio's)."


# What the model card and compare showed when each kept its own list; a setting leaves either only
# by a change to its declaration.
CARD_BEFORE = {"epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate",
               "head_learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length", "seed",
               "mixed_precision", "dropout_masks", "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
               "freeze_embeddings", "train_top_layers", "metric_for_best", "early_stopping_patience", "task_options"}
COMPARED_BEFORE = {"task", "model", "train_file", "validation_file", "test_file", "epochs", "max_steps", "batch_size",
                   "gradient_accumulation_steps", "learning_rate", "head_learning_rate", "warmup_ratio",
                   "weight_decay", "max_length", "seed", "lora", "lora_r", "train_top_layers", "freeze_embeddings",
                   "mixed_precision", "dropout_masks", "task_options"}


def test_card_and_compare_settings_come_from_the_declarations():
    assert CARD_SETTINGS == tuple(s.name for s in declared_settings() if s.card)
    assert COMPARED_SETTINGS == tuple(s.name for s in declared_settings() if s.compared)
    assert set(CARD_SETTINGS) == CARD_BEFORE
    assert set(COMPARED_SETTINGS) == COMPARED_BEFORE


def every_setting_given() -> dict[str, typing.Any]:
    """A value, not the empty one, for every setting."""
    values = {bool: True, int: 2, float: 0.5, str: "x", list: ["query"], dict: {"pooling": "mean"}}
    return {s.name: values[s.value_type] for s in declared_settings()}


def test_the_model_card_lists_the_card_settings(tmp_path: Path):
    from finetune_kit.model_card import render_model_card
    from finetune_kit.modeling import Manifest

    config = {**every_setting_given(), "task": "text-classification"}
    manifest = Manifest(task="text-classification", task_state={}, config=config, base_model="org/encoder",
                        versions={})
    card = render_model_card(manifest, [], {"splits": {}}, str(tmp_path / "model"), {}, None)
    section = card.split("## Hyper-parameters", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    assert rows[1:] == list(CARD_SETTINGS)  # the first row is the header


def test_compare_shows_the_compared_settings(tmp_path: Path):
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.5}}))
        (run / "finetune_kit.json").write_text(json.dumps({"task": "text-classification",
                                                           "config": every_setting_given()}))
        runs.append(str(run))
    result = CliRunner().invoke(app, ["compare", "--all-settings", *runs])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")]
    assert set(rows) - {"", "validation accuracy"} == set(COMPARED_SETTINGS)
