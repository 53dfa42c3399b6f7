"""Run settings: one frozen dataclass, read from keyword arguments, YAML and ``key=value``
overrides, validated with messages that name the field, the bad value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

MIXED_PRECISION = ("no", "fp16", "bf16")
FORMATS = ("csv", "tsv", "jsonl", "json", "conll", "text")


class ConfigError(ValueError):
    """An invalid setting; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    # Registered task name (``finetune-kit tasks`` lists them).
    task: str
    # Pretrained encoder: a local directory or a Hugging Face Hub id.
    model: str
    # Directory that receives the trained model, metrics, report and logs.
    output_dir: str
    # Training data: a CSV/TSV/JSON Lines file, or the split name of ``dataset``.
    train_file: str | None = None
    # Validation data (used for the best checkpoint, early stopping and metrics).
    validation_file: str | None = None
    # Test data, evaluated once at the end with the best weights.
    test_file: str | None = None
    # Hub dataset name (instead of files); needs a network.
    dataset: str | None = None
    # Hub dataset configuration, e.g. "sst2" for "glue".
    dataset_config: str | None = None
    # Split names in the hub dataset.
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = None
    # File format: "auto" (by extension, else the task's usual one), "csv", "tsv", "jsonl",
    # "json" (one document: SQuAD or an array of objects), "conll" (token-per-line columns) or
    # "text" (plain text, one text per non-blank line, in column "text").
    file_format: str = "auto"
    # Column holding the (first) text; None: the task's default ("text"; "tokens" for tagging).
    text_column: str | None = None
    # Column holding the second text of pair tasks; None: "text_pair".
    text_pair_column: str | None = None
    # Column holding the label; None: the task's default ("label"; "tags" for tagging).
    label_column: str | None = None
    # Keep only the first N training rows (None: all).
    max_train_samples: int | None = None
    # Hold out this share of the training rows (the last ones, in file order) as the validation
    # split, when there is no validation file (None: no).
    validation_fraction: float | None = None
    # Longest input in subword tokens, special tokens included; None: the task's default
    # (128; 384 for question answering).
    max_length: int | None = None
    # Passes over the training data.
    epochs: float = 3.0
    # Stop after this many optimizer steps (None: run all epochs).
    max_steps: int | None = None
    # Examples per training batch on each process.
    batch_size: int = 32
    # Examples per evaluation batch on each process.
    eval_batch_size: int = 64
    # Peak AdamW learning rate.
    learning_rate: float = 5e-5
    # Peak learning rate of the task's head modules (None: the task's default, else learning_rate);
    # new heads often want more than a pretrained encoder.
    head_learning_rate: float | None = None
    # Train LoRA adapters (peft) in the encoder instead of all its weights; the task's head
    # modules train fully and are saved with the adapter.
    lora: bool = False
    # LoRA rank, scaling numerator (updates are scaled by lora_alpha / lora_r) and dropout.
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    # Linear layers that get adapters, by module name (e.g. [query, value]); None: every linear
    # layer of the encoder's transformer blocks (attention projections and feed-forward).
    lora_target_modules: list[str] | None = None
    # Keep the encoder's embedding layer frozen.
    freeze_embeddings: bool = False
    # Train only the top K transformer layers of the encoder (and the head); the layers below
    # and the embeddings stay frozen. None: all layers; 0: the head alone.
    train_top_layers: int | None = None
    # AdamW weight decay (not applied to biases and LayerNorm weights).
    weight_decay: float = 0.0
    # Share of the optimizer steps used for linear warm-up.
    warmup_ratio: float = 0.0
    # Batches whose gradients are summed before each optimizer step.
    gradient_accumulation_steps: int = 1
    # Gradient norm clipping (0 or None: off).
    max_grad_norm: float | None = 1.0
    # "no", "fp16" or "bf16", passed to Accelerate.
    mixed_precision: str = "no"
    # Seed for weights of new heads, dropout and data order.
    seed: int = 42
    # Put examples of similar length in the same batch (shuffled groups): less padding.
    group_by_length: bool = True
    # Evaluate every N optimizer steps as well as after each epoch (None: per epoch only).
    eval_steps: int | None = None
    # Metric that picks the best checkpoint (None: the task's default).
    metric_for_best: str | None = None
    # Whether a higher value of the metric that picks the best checkpoint (metric_for_best, else
    # the task's default) is better (true) or a lower one (false); None: as the task declares it
    # (lower for the loss and the metrics it lists, e.g. perplexity; higher for any other).
    greater_is_better: bool | None = None
    # Stop after this many evaluations without improvement (None: never).
    early_stopping_patience: int | None = None
    # Also write a checkpoint every N optimizer steps (None: only after each epoch). A
    # checkpoint holds what an exact resume needs: OUTPUT_DIR/checkpoints/step-N.
    save_steps: int | None = None
    # Keep the N newest checkpoints (0: write none).
    save_total_limit: int = 1
    # Continue the run from the latest complete checkpoint in output_dir.
    resume: bool = False
    # Continue the run from this checkpoint folder (OUTPUT_DIR/checkpoints/step-N).
    resume_from: str | None = None
    # Resume even when the training or validation data differ from the data the checkpoint was
    # trained on (a warning instead of an error).
    resume_anyway: bool = False
    # Log the training loss every N optimizer steps.
    logging_steps: int = 20
    # Replace a model already in output_dir (otherwise that is an error).
    overwrite: bool = False
    # Allow model code from the Hub repository to run (only for models you trust).
    trust_remote_code: bool = False
    # Task-specific options (see each task's documentation).
    task_options: dict[str, Any] = field(default_factory=dict)
    # Write PNG plots into the report (report.html embeds them); off makes the report faster.
    report_plots: bool = True
    # Bootstrap resamples for the report's 95% confidence intervals (seeded by seed); 0: none.
    bootstrap_resamples: int = 1000

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting allows: from ``low`` to ``high`` (None: unbounded), each end
    included unless it is open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f"greater than {self.low}" if self.low_open else f">= {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


POSITIVE = Bounds(low=0, low_open=True)
NON_NEGATIVE = Bounds(low=0)
SHARE = Bounds(low=0, high=1, high_open=True)

# What every numeric setting allows (each int and float field is listed here); a float must also
# be finite.
NUMERIC_BOUNDS: dict[str, Bounds] = {
    **dict.fromkeys(("epochs", "learning_rate", "head_learning_rate", "lora_alpha", "lora_r", "batch_size",
                     "eval_batch_size", "max_length", "max_train_samples", "max_steps", "gradient_accumulation_steps",
                     "eval_steps", "early_stopping_patience", "save_steps", "logging_steps"), POSITIVE),
    **dict.fromkeys(("weight_decay", "max_grad_norm", "train_top_layers", "save_total_limit",
                     "bootstrap_resamples"), NON_NEGATIVE),
    "warmup_ratio": SHARE,
    "lora_dropout": SHARE,
    "validation_fraction": Bounds(low=0, high=1, low_open=True, high_open=True),
    "seed": Bounds(low=0, high=2**32 - 1),  # the seeds numpy accepts
}


def _check_bounds(name: str, value: Any, bounds: Bounds) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} is not allowed; it must be a finite number {bounds.describe()}")
    if not bounds.allows(value):
        raise ConfigError(f"{name}: {value!r} is not allowed; it must be {bounds.describe()}")


def validate(config: TrainConfig) -> None:
    """Check every field; the error names the field, the bad value and what is allowed."""
    hints = _field_types()
    for f in fields(config):
        _check_type(f.name, getattr(config, f.name), hints[f.name])
    for name, bounds in NUMERIC_BOUNDS.items():
        _check_bounds(name, getattr(config, name), bounds)
    if config.resume and config.resume_from:
        raise ConfigError("resume_from: give either resume (the latest checkpoint in output_dir) or resume_from "
                          "(one checkpoint folder), not both")
    if config.lora_target_modules is not None and (
            not config.lora_target_modules or not all(isinstance(m, str) and m for m in config.lora_target_modules)):
        raise ConfigError(f"lora_target_modules: {config.lora_target_modules!r} is not allowed; "
                          "expected a non-empty list of module names")
    if config.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"mixed_precision: {config.mixed_precision!r} is not allowed; choose one of "
            f"{', '.join(MIXED_PRECISION)}"
        )
    if config.file_format not in ("auto", *FORMATS):
        raise ConfigError(
            f"file_format: {config.file_format!r} is not allowed; choose one of auto, {', '.join(FORMATS)}"
        )
    if config.max_length is not None and config.max_length < 8:
        raise ConfigError(f"max_length: {config.max_length!r} is too small; use at least 8")
    if config.train_file is None and config.dataset is None:
        raise ConfigError("train_file: missing; give a training file or a hub dataset name (dataset)")


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = any(isinstance(value, t) for t in allowed if t is not type(None))
        if not ok and float in allowed and isinstance(value, int):
            ok = True
    if not ok:
        names = " or ".join(sorted({_type_name(t) for t in allowed}))
        raise ConfigError(f"{name}: {value!r} is not allowed; expected {names}")


def _allowed_types(hint: Any) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(hint):
            out += _allowed_types(arg)
        return out
    if origin is not None:
        return (origin,)
    return (hint,)


def _type_name(t: type) -> str:
    return {type(None): "null", dict: "a mapping", bool: "true/false"}.get(t, t.__name__)


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a config; unknown keys are an error with a suggestion."""
    import difflib

    known = field_names()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{key}: unknown setting{hint}")
    values = {key: _coerce_number(value, _field_types()[key]) for key, value in values.items()}
    if isinstance(values.get("lora_target_modules"), str):  # "query,value" from YAML or key=value
        values["lora_target_modules"] = [m.strip() for m in values["lora_target_modules"].split(",") if m.strip()]
    for required in ("task", "model", "output_dir"):
        if values.get(required) in (None, ""):
            raise ConfigError(f"{required}: missing; it is required")
    return TrainConfig(**values)


def _coerce_number(value: Any, hint: Any) -> Any:
    """YAML reads ``1e-4`` (no dot) as a string; take it as the number it clearly is."""
    allowed = _allowed_types(hint)
    if isinstance(value, str) and float in allowed and str not in allowed:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_value(text: str) -> Any:
    """A ``key=value`` value as YAML reads it: numbers, booleans, null, lists, strings."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` and dotted ``task_options.key=value`` overrides."""
    options = values.get("task_options")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"task_options: {options!r} is not allowed; expected a mapping of option: value")
    out = {**values, "task_options": dict(options or {})}
    hints = _field_types()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        value = parse_value(raw)
        if key.startswith("task_options."):
            out["task_options"][key.split(".", 1)[1]] = value
            continue
        if key in hints and str in _allowed_types(hints[key]) and not isinstance(value, str):
            value = raw if value is not None else None
        out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
    **settings: Any,
) -> TrainConfig:
    """Defaults < YAML file < ``key=value`` overrides < explicit keyword settings."""
    values: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    values = apply_overrides(values, overrides or [])
    for key, value in settings.items():
        if key == "task_options" and value:
            values["task_options"] = {**values.get("task_options", {}), **value}
        elif value is not None:
            values[key] = value
    if not values.get("task_options"):
        values.pop("task_options", None)
    return from_dict(values)
