"""Run settings: one frozen dataclass, read from keyword arguments, YAML and ``key=value``
overrides, validated with messages that name the field, the bad value and what is allowed.

Each field of ``TrainConfig`` is declared once, with ``setting(...)``: its type and default,
its help, its option on ``finetune-kit train`` and whether the model card and ``compare``
show it. The command's options (``train_options.py``), ``CARD_SETTINGS`` and
``COMPARED_SETTINGS`` are derived from these declarations, so a new setting is one new field."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# What mixed_precision allows; "auto" is resolved at the start of a run to "bf16" or "no"
# (precision.auto_mixed_precision), and the run records the value it resolved to.
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")
DROPOUT_MASKS = ("torch", "fast")  # dropout.dropout_masks
FORMATS = ("csv", "tsv", "jsonl", "json", "conll", "text")
# The experiment trackers a run can report to (report_to), through Accelerate.
TRACKERS = ("tensorboard", "mlflow", "trackio", "wandb")

# The default of a setting that the task decides when the run leaves it unset.
TASK_DEFAULT = "the task's, shown by `finetune-kit tasks NAME`"

# The key of a setting's declaration in its field's metadata.
DECLARATION = "setting"
# The default of a setting that has none.
REQUIRED: Any = object()


class ConfigError(ValueError):
    """An invalid setting; the message names the field."""


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
OPEN_SHARE = Bounds(low=0, high=1, low_open=True, high_open=True)
SEED = Bounds(low=0, high=2**32 - 1)  # the seeds numpy accepts


@dataclass(frozen=True)
class Setting:
    """One run setting: what ``setting(...)`` declares on a ``TrainConfig`` field, and the field's
    name, type and default (``declared_settings`` joins them)."""

    # What the setting does, one line (no trailing period); the help of its option.
    help: str
    # Its option names on ``finetune-kit train``, as typer takes them, e.g. ("--train",) or
    # ("--group-by-length/--no-group-by-length",); empty: --field-name.
    names: tuple[str, ...] = ()
    # The placeholder of the option's value in the help (None: the type's, e.g. <int>).
    metavar: str | None = None
    # What the setting left unset (None) means, shown as its default, e.g. "all layers".
    unset: str | None = None
    # Listed among the model card's hyper-parameters.
    card: bool = False
    # A row of ``finetune-kit compare``.
    compared: bool = False
    # The values a numeric setting allows (each int and float setting has them).
    bounds: Bounds | None = None
    # What runs had before the setting was recorded, where its default changed since (REQUIRED: the
    # default); a checkpoint that does not record the setting was written with this value.
    unrecorded: Any = REQUIRED
    # From the field: its name, type hint and default.
    name: str = ""
    hint: Any = None
    default: Any = REQUIRED

    @property
    def options(self) -> tuple[str, ...]:
        return self.names or (f"--{self.name.replace('_', '-')}",)

    @property
    def value_type(self) -> type:
        """The field's type without None: bool, int, float, str, list or dict."""
        return next(t for t in _allowed_types(self.hint) if t is not type(None))

    @property
    def default_text(self) -> str | None:
        """The default as the help shows it (None: none to show, for a required setting or a mapping)."""
        if self.default is None:
            return self.unset
        if self.default is REQUIRED or isinstance(self.default, dict):
            return None
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}".replace("e-0", "e-")
        return str(self.default)

    @property
    def help_text(self) -> str:
        shown = self.default_text
        return f"{self.help} (default: {shown})." if shown is not None else f"{self.help}."


def setting(default: Any = MISSING, *, help: str, option: str | tuple[str, ...] = (), metavar: str | None = None,
            unset: str | None = None, card: bool = False, compared: bool = False, bounds: Bounds | None = None,
            unrecorded: Any = REQUIRED, default_factory: Any = MISSING) -> Any:
    """A ``TrainConfig`` field with its declaration (see ``Setting``)."""
    declaration = Setting(help=help, names=(option,) if isinstance(option, str) else option, metavar=metavar,
                          unset=unset, card=card, compared=compared, bounds=bounds, unrecorded=unrecorded)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={DECLARATION: declaration})


@dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run, each declared once (``setting``): its type, default, help,
    option and bounds, and whether the model card and ``compare`` show it."""

    task: str = setting(help="Registered task name; `finetune-kit tasks` lists them", compared=True)
    model: str = setting(help="Pretrained encoder: a local directory or a Hugging Face Hub id", compared=True)
    output_dir: str = setting(help="Directory that receives the trained model, metrics, report and logs",
                              option="--output")
    train_file: str | None = setting(None, help="Training file (CSV, TSV, JSON Lines, JSON or CoNLL)",
                                     option="--train", compared=True)
    validation_file: str | None = setting(
        None, help="Validation file: it picks the best checkpoint, drives early stopping and is scored",
        option="--validation", compared=True)
    test_file: str | None = setting(None, help="Test file, scored once at the end with the best weights",
                                    option="--test", compared=True)
    dataset: str | None = setting(None, help="Hub dataset name, instead of files (needs a network)")
    dataset_config: str | None = setting(None, help="Hub dataset configuration, e.g. sst2 for glue")
    train_split: str = setting("train", help="Split of the hub dataset to train on")
    validation_split: str | None = setting("validation", help="Split of the hub dataset to validate on")
    test_split: str | None = setting(None, help="Split of the hub dataset to test on", unset="none")
    file_format: str = setting(
        "auto", help="File format: auto (by extension, else the task's usual one), csv, tsv, jsonl, json (one "
                     "document: SQuAD or an array of objects), conll (token-per-line columns) or text (plain "
                     "text, one text per non-blank line, in column text)")
    column_names: list[str] | None = setting(
        None, help="The columns of CSV and TSV files that have no header line, in order (comma-separated on the "
                   "command line, e.g. text,labels,id); their first line is data", metavar="NAMES",
        unset="none: the first line is the header")
    text_column: str | None = setting(None, help="Column holding the (first) text", unset=TASK_DEFAULT)
    text_pair_column: str | None = setting(None, help="Column holding the second text of pair tasks",
                                           unset=TASK_DEFAULT)
    label_column: str | None = setting(None, help="Column holding the label", unset=TASK_DEFAULT)
    max_train_samples: int | None = setting(None, help="Keep only the first N training rows", unset="all",
                                            bounds=POSITIVE)
    validation_fraction: float | None = setting(
        None, help="Hold out this share of the training rows (the last ones, in file order) as the validation "
                   "split, when there is no validation file", unset="none", bounds=OPEN_SHARE)
    max_length: int | None = setting(None, help="Longest input in subword tokens, special tokens included",
                                     unset=TASK_DEFAULT, card=True, compared=True, bounds=POSITIVE)
    epochs: float = setting(3.0, help="Passes over the training data", card=True, compared=True, bounds=POSITIVE)
    max_steps: int | None = setting(None, help="Stop after this many optimizer steps", unset="run all epochs",
                                    card=True, compared=True, bounds=POSITIVE)
    batch_size: int = setting(32, help="Examples per training batch on each process", card=True, compared=True,
                              bounds=POSITIVE)
    eval_batch_size: int = setting(64, help="Examples per evaluation batch on each process", bounds=POSITIVE)
    learning_rate: float = setting(5e-5, help="Peak AdamW learning rate", card=True, compared=True, bounds=POSITIVE)
    head_learning_rate: float | None = setting(
        None, help="Peak learning rate of the task's head modules; new heads often want more than a pretrained "
                   "encoder", unset="the task's if it has one (`finetune-kit tasks NAME` shows it), else learning_rate",
        card=True, compared=True, bounds=POSITIVE)
    lora: bool = setting(False, help="Train LoRA adapters (peft) in the encoder instead of all its weights; the "
                                     "task's head modules train fully and are saved with the adapter",
                         option="--lora", card=True, compared=True)
    lora_r: int = setting(8, help="LoRA rank", card=True, compared=True, bounds=POSITIVE)
    lora_alpha: float = setting(16.0, help="LoRA scaling numerator: updates are scaled by lora_alpha / lora_r",
                                card=True, bounds=POSITIVE)
    lora_dropout: float = setting(0.1, help="Dropout on the input of the LoRA adapters", card=True, bounds=SHARE)
    lora_target_modules: list[str] | None = setting(
        None, help="Linear layers that get LoRA adapters, by module name (comma-separated on the command line, "
                   "e.g. query,value)",
        unset="every linear layer of the encoder's transformer blocks: attention projections and feed-forward",
        card=True)
    freeze_embeddings: bool = setting(False, help="Keep the encoder's embedding layer frozen",
                                      option="--freeze-embeddings", card=True, compared=True)
    train_top_layers: int | None = setting(
        None, help="Train only the top K transformer layers of the encoder and the head; the layers below and "
                   "the embeddings stay frozen (0: the head alone)", unset="all layers", card=True, compared=True,
        bounds=NON_NEGATIVE)
    weight_decay: float = setting(0.0, help="AdamW weight decay (not applied to biases and LayerNorm weights)",
                                  card=True, compared=True, bounds=NON_NEGATIVE)
    warmup_ratio: float = setting(0.0, help="Share of the optimizer steps used for linear warm-up", card=True,
                                  compared=True, bounds=SHARE)
    gradient_accumulation_steps: int = setting(1, help="Batches whose gradients are summed before each "
                                                       "optimizer step", card=True, compared=True, bounds=POSITIVE)
    max_grad_norm: float | None = setting(1.0, help="Gradient norm clipping (0: off)", card=True, bounds=NON_NEGATIVE)
    mixed_precision: str = setting(
        "no", help="Mixed precision (Accelerate's autocast; the optimizer's master weights stay fp32): no, bf16, "
                   "fp16 (GPUs only) or auto (bf16 on CPUs with AMX or AVX-512 BF16 and on GPUs with native bf16, "
                   "else no; the run records what it chose)", card=True, compared=True)
    dropout_masks: str = setting(
        "fast", help="How dropout draws its masks in training on the CPU: fast (16-bit random draws, the same "
                     "distribution at 1.1-1.3x the training speed) or torch (its own dropout, the masks torch "
                     "draws for a seed)",
        card=True, compared=True, unrecorded="torch")
    seed: int = setting(42, help="Seed for the weights of new heads, dropout and data order", card=True,
                        compared=True, bounds=SEED)
    group_by_length: bool = setting(
        True, help="Put examples of similar length in the same batch (shuffled groups): less padding",
        option="--group-by-length/--no-group-by-length")
    eval_steps: int | None = setting(None, help="Evaluate every N optimizer steps as well as after each epoch",
                                     unset="after each epoch only", bounds=POSITIVE)
    metric_for_best: str | None = setting(None, help="Metric that picks the best checkpoint", unset=TASK_DEFAULT,
                                          card=True)
    greater_is_better: bool | None = setting(
        None, help="Whether a higher or a lower value of the metric that picks the best checkpoint is better",
        option="--greater-is-better/--lower-is-better",
        unset="as the task declares it: lower for the loss and the metrics the task lists, higher for any other")
    early_stopping_patience: int | None = setting(None, help="Stop after this many evaluations without "
                                                             "improvement", unset="never", card=True, bounds=POSITIVE)
    save_steps: int | None = setting(
        None, help="Also write a checkpoint every N optimizer steps; a checkpoint holds what an exact resume "
                   "needs: OUTPUT/checkpoints/step-N", unset="after each epoch only", bounds=POSITIVE)
    save_total_limit: int = setting(1, help="Keep the N newest checkpoints (0: write none)", bounds=NON_NEGATIVE)
    resume: bool = setting(False, help="Continue the run from the latest complete checkpoint in the output "
                                       "directory", option="--resume")
    resume_from: str | None = setting(None, help="Continue the run from this checkpoint folder "
                                                 "(OUTPUT/checkpoints/step-N)", metavar="DIR")
    resume_anyway: bool = setting(
        False, help="Resume even when the training or validation data differ from the data the checkpoint was "
                    "trained on (a warning instead of an error)", option="--resume-anyway")
    logging_steps: int = setting(20, help="Log the training loss every N optimizer steps", bounds=POSITIVE)
    report_to: list[str] | None = setting(
        None, help="Experiment trackers that receive the run's settings, training loss, learning rate, tokens/s and "
                   "evaluation metrics: any of tensorboard, mlflow, trackio, wandb (comma-separated on the command "
                   "line, e.g. tensorboard,mlflow), or none", metavar="NAMES", unset="none")
    overwrite: bool = setting(False, help="Replace a model already in the output directory (otherwise that is an "
                                          "error)", option="--overwrite")
    trust_remote_code: bool = setting(False, help="Allow model code from the Hub repository to run (only for "
                                                  "models you trust)", option="--trust-remote-code")
    task_options: dict[str, Any] = setting(
        default_factory=dict, help="Task-specific option, repeatable; `finetune-kit tasks NAME` lists a task's "
                                   "options and their shortcuts", option=("--task-option", "-o"),
        metavar="KEY=VALUE", card=True, compared=True)
    report_plots: bool = setting(
        True, help="Write PNG plots into the report (report.html embeds them); off makes the report faster",
        option="--report-plots/--no-report-plots")
    bootstrap_resamples: int = setting(1000, help="Bootstrap resamples for the report's 95% confidence intervals, "
                                                  "seeded by seed (0: none)", bounds=NON_NEGATIVE)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


@cache
def declared_settings(config_class: type = TrainConfig) -> tuple[Setting, ...]:
    """Every setting of ``config_class`` (a dataclass whose fields are declared with ``setting``),
    in field order, with its declaration."""
    hints = typing.get_type_hints(config_class)
    return tuple(dataclasses.replace(f.metadata[DECLARATION], name=f.name, hint=hints[f.name], default=_default(f))
                 for f in fields(config_class))


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return REQUIRED if f.default is MISSING else f.default


# The settings the model card lists as hyper-parameters, and those ``finetune-kit compare`` shows.
CARD_SETTINGS = tuple(s.name for s in declared_settings() if s.card)
COMPARED_SETTINGS = tuple(s.name for s in declared_settings() if s.compared)
# What every numeric setting allows (each int and float setting declares it); a float must also be
# finite.
NUMERIC_BOUNDS = {s.name: s.bounds for s in declared_settings() if s.bounds is not None}


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
    _check_report_to(config.report_to)
    _check_column_names(config.column_names)
    if config.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"mixed_precision: {config.mixed_precision!r} is not allowed; choose one of "
            f"{', '.join(MIXED_PRECISION)}"
        )
    if config.dropout_masks not in DROPOUT_MASKS:
        raise ConfigError(f"dropout_masks: {config.dropout_masks!r} is not allowed; choose one of "
                          f"{', '.join(DROPOUT_MASKS)}")
    if config.file_format not in ("auto", *FORMATS):
        raise ConfigError(
            f"file_format: {config.file_format!r} is not allowed; choose one of auto, {', '.join(FORMATS)}"
        )
    if config.max_length is not None and config.max_length < 8:
        raise ConfigError(f"max_length: {config.max_length!r} is too small; use at least 8")
    if config.train_file is None and config.dataset is None:
        raise ConfigError("train_file: missing; give a training file or a hub dataset name (dataset)")


def _check_column_names(names: list[str] | None) -> None:
    """Names for header-less files: none empty, none twice."""
    if names is None:
        return
    if not names or any(not isinstance(name, str) or not name.strip() for name in names):
        raise ConfigError(f"column_names: {names!r} is not allowed; give the column names in order, none empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"column_names: {', '.join(repeated)} named twice; each column needs its own name")


def _check_report_to(names: list[str] | None) -> None:
    """Tracker names, or none alone."""
    allowed = f"choose from {', '.join(TRACKERS)} (comma-separated), or none"
    if names is None or names == ["none"]:
        return
    if not names:
        raise ConfigError(f"report_to: {names!r} is not allowed; {allowed}")
    if "none" in names:
        raise ConfigError(f"report_to: {','.join(names)} is not allowed; none stands alone, it reports to no tracker")
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"report_to: {name!r} is not a tracker; {allowed}")


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
    for name in _list_settings():  # "query,value" from YAML or key=value
        if isinstance(values.get(name), str):
            values[name] = [part.strip() for part in values[name].split(",") if part.strip()]
    for required in ("task", "model", "output_dir"):
        if values.get(required) in (None, ""):
            raise ConfigError(f"{required}: missing; it is required")
    return TrainConfig(**values)


def _list_settings() -> list[str]:
    """The settings whose value is a list, which YAML and key=value may give comma-separated."""
    return [s.name for s in declared_settings() if s.value_type is list]


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
