"""The Python API: ``train``, ``load`` (a predictor) and ``evaluate``.

The CLI is a thin layer over these functions, so a downstream application gets exactly what
the command line does.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from datasets import Dataset
from torch import nn

from .adapters import apply_lora, freeze, is_peft_model, merge_adapter
from .checkpoints import check_data, data_fingerprint, find_resume_checkpoint, list_checkpoints
from .config import ConfigError, TrainConfig, load_config
from .data import detect_format, load_splits, read_file
from .modeling import (
    MANIFEST,
    WEIGHTS,
    Manifest,
    ModelDirError,
    count_parameters,
    load_encoder_config,
    load_tokenizer,
    load_weights,
    package_versions,
    position_limit,
    read_manifest,
    resolve_model_dir,
    save_model_dir,
    write_manifest,
)
from .hub import evaluation_dir
from .output_dir import OutputDirError, locked_output_dir
from .registry import get_task_class
from .saved_models import first_token_only_where_read, load_encoder, saved_encoder, saved_task_model, task_settings
from .model_card import describe_data, write_model_card
from .onnx_runtime import ONNX_FILE, OnnxTaskModel, resolve_backend
from .report import ReportSettings, split_report, write_evaluation
from .report_markdown import summary_markdown
from .task import Task, TaskError
from .accelerator import new_accelerator, run_accelerator
from .inference import evaluate_raw, input_dataset, predict_raw, prepare_features
from .trackers import accelerator_settings, check_trackers_installed, log_evaluation, start_tracking, tracking
from .trainer import Trainer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    metrics: dict[str, dict[str, Any]]
    global_step: int
    train_runtime_s: float
    train_tokens: int
    train_padded_tokens: int
    best_metric: float | None


def file_format_fallback(task: Task) -> str | None:
    """The format a task reads files of unknown extension as (``default_file_format``)."""
    return task.default_file_format


def adapt_model(model: nn.Module, encoder: nn.Module, config: TrainConfig, task: Task) -> nn.Module:
    """Apply the run's freezing and LoRA settings to a newly built task model."""
    freeze(model, encoder, config.freeze_embeddings, config.train_top_layers)
    if not config.lora:
        return model
    heads = [*task.head_modules, *(["pooler"] if task.uses_pooler else [])]
    return apply_lora(model, encoder, heads, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, top_layers=config.train_top_layers,
                      base_model=config.model)


def reload_saved_weights(accelerator: Accelerator, prepared: nn.Module, model_dir: Path) -> None:
    """Put the saved (best) weights back into the prepared model on every process.

    Under FSDP the prepared model's parameters are shards, so the full weights are read on the
    main process and scattered by torch's distributed state-dict API; elsewhere every process
    loads the file into its unwrapped model.
    """
    unwrapped = accelerator.unwrap_model(prepared)
    if accelerator.distributed_type != DistributedType.FSDP or is_peft_model(unwrapped):
        load_weights(unwrapped, model_dir)
        return
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = load_file(model_dir / WEIGHTS) if accelerator.is_main_process else {}
    set_model_state_dict(prepared, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def describe_adaptation(config: TrainConfig) -> str:
    parts = [f"LoRA r={config.lora_r} alpha={config.lora_alpha:g}" if config.lora else "full fine-tuning"]
    if config.train_top_layers is not None:
        parts.append(f"top {config.train_top_layers} layer(s)")
    elif config.freeze_embeddings:
        parts.append("embeddings frozen")
    return ", ".join(parts)


def check_max_length(config: TrainConfig, task: Task) -> None:
    """The task's inputs must fit the encoder's position embeddings: a longer text would crash
    inside the encoder, at train or at predict time, only once one that long comes along."""
    limit = position_limit(load_encoder_config(config.model, config.trust_remote_code))
    max_length = task.settings.max_length
    if limit is not None and max_length > limit:
        given = "" if config.max_length else " (the task's default)"
        raise ConfigError(f"max_length: {max_length}{given} is more than the encoder {config.model} reads "
                          f"({limit} tokens); use --max-length {limit} or less (max_length)")


def _check_output_dir(config: TrainConfig) -> None:
    """A fresh run must not mix with an earlier one; a resumed run continues the model and
    checkpoints already there."""
    out = Path(config.output_dir)
    if config.overwrite or config.resume or config.resume_from:
        return
    if (out / MANIFEST).exists():
        raise OutputDirError(
            f"output_dir: {out} already holds a trained model; choose another directory, pass "
            f"--overwrite (overwrite=true), or --resume (resume=true) to continue its run from a checkpoint"
        )
    if list_checkpoints(out):
        raise OutputDirError(
            f"output_dir: {out} holds checkpoints of an earlier run; pass --resume (resume=true) to continue it "
            f"or --overwrite (overwrite=true) to start over"
        )


def train(config: TrainConfig | str | Path | None = None, overrides: list[str] | None = None, **settings: Any) -> TrainResult:
    """Fine-tune an encoder.

    ``train(task=..., model=..., train_file=..., output_dir=..., epochs=...)``, or
    ``train("card.yaml", ["epochs=2"])``: the same settings as ``finetune-kit train``.
    """
    if isinstance(config, TrainConfig):
        config = config.replace(**settings) if settings else config
    else:
        config = load_config(config, overrides, **settings)
    return run_training(config)


def run_training(config: TrainConfig) -> TrainResult:
    from .console import message_console

    check_trackers_installed(config)
    accelerator, mixed_precision, auto_reason = run_accelerator(
        config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        **accelerator_settings(config),
    )
    # The run records (manifest, model card, checkpoints, trackers) the precision it runs with.
    config = config.replace(mixed_precision=mixed_precision) if mixed_precision != config.mixed_precision else config
    console = message_console(stderr=True, quiet=not accelerator.is_main_process)
    if auto_reason is not None:
        console.print(f"Mixed precision: {mixed_precision} (auto: {auto_reason})")
    with locked_output_dir(Path(config.output_dir), enabled=accelerator.is_main_process), \
            tracking(accelerator, config):
        return _run_training_locked(config, accelerator, console)


def _run_training_locked(config: TrainConfig, accelerator: Accelerator, console: Any) -> TrainResult:
    """``run_training`` once it holds its output directory."""
    from rich.markup import escape

    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(message)}")

    _check_output_dir(config)
    resume_from = find_resume_checkpoint(config, accelerator.num_processes, warn)

    # Everything that can fail on bad input happens before anything is written.
    task_class = get_task_class(config.task)
    task = task_class(task_settings(config.to_dict(), task_class))
    with accelerator.main_process_first():  # one process fills the datasets / hub caches first
        raw, sources = load_splits(config, file_format_fallback(task))
        tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    task.setup(raw, tokenizer, sources)
    check_max_length(config, task)
    # What checkpoints record of the data, and a resumed run must still have (the test split may change).
    checkpointed = config.save_total_limit > 0 or resume_from is not None
    fingerprints = {split: data_fingerprint(raw[split]) for split in ("train", "validation")
                    if checkpointed and split in raw}
    if resume_from is not None:
        check_data(resume_from, fingerprints, sources, config, warn)
        console.print(f"Resuming from {escape(str(resume_from))}")
    features = {split: prepare_features(task, ds, split) for split, ds in raw.items()}

    set_seed(config.seed)
    encoder = load_encoder(config.model, config.trust_remote_code, keep_pooler=task.uses_pooler)
    model = first_token_only_where_read(task, adapt_model(task.build_model(encoder), encoder, config, task), encoder)
    trainable, total = count_parameters(model)
    console.print(f"[bold]{escape(config.task)}[/] on {escape(config.model)}: {trainable:,} trainable of "
                  f"{total:,} parameters ({describe_adaptation(config)}); {len(raw['train']):,} training examples")

    output_dir = Path(config.output_dir)
    manifest = Manifest(task=config.task, task_state=task.state(), config=config.to_dict(),
                        base_model=config.model, versions=package_versions())

    def save_best(prepared: Any) -> None:
        accelerator.wait_for_everyone()
        state = accelerator.get_state_dict(prepared)  # collective under FSDP / DeepSpeed ZeRO-3
        if accelerator.is_main_process:
            save_model_dir(output_dir, accelerator.unwrap_model(prepared, keep_torch_compile=False), tokenizer,
                           encoder.config, manifest, state)
        accelerator.wait_for_everyone()

    evaluate_validation = None
    if "validation" in raw:
        def evaluate_validation(current: Any) -> dict[str, Any]:
            metrics, _, _ = evaluate_raw(accelerator, current, task, raw["validation"], features["validation"],
                                         config.eval_batch_size)
            return metrics

    trainer = Trainer(config, task, model, features["train"], accelerator, evaluate_validation, save_best,
                      output_dir / "train_log.jsonl", resume_from=resume_from, data_fingerprints=fingerprints)
    start_tracking(accelerator, config, resumed_step=trainer.resumed["step"] if trainer.resumed else 0)
    before = evaluate_before_training(accelerator, trainer.model, task, raw, features, config.eval_batch_size)
    if trainer.resumed is None:  # a resumed run's were logged by the run it continues
        for split, split_metrics in before.items():
            log_evaluation(accelerator, split, split_metrics, step=0)
    state = trainer.train()

    # Final figures come from the weights as saved, so they are what load() will reproduce.
    accelerator.wait_for_everyone()
    reload_saved_weights(accelerator, trainer.model, output_dir)
    metrics: dict[str, dict[str, Any]] = {}
    report_settings = ReportSettings(plots=config.report_plots, bootstrap_resamples=config.bootstrap_resamples,
                                     seed=config.seed)
    split_reports: dict[str, dict[str, Any]] = {}
    state_tuned = False
    for split in ("validation", "test"):
        if split in raw:
            metrics[split], predictions, tuned = evaluate_raw(accelerator, trainer.model, task, raw[split],
                                                              features[split], config.eval_batch_size,
                                                              calibrate=split == "validation")
            state_tuned = state_tuned or tuned
            if split in before:
                metrics[split]["before_training"] = before[split]
            if accelerator.is_main_process:  # from this split's predictions, before they are dropped
                split_reports[split] = split_report(task, predictions, raw[split], metrics[split], report_settings)
            del predictions
    if "test" in metrics:  # scored once, with the best weights, at the run's last step
        log_evaluation(accelerator, "test", metrics["test"], state.global_step)
    if state_tuned:  # the tuned settings go with the weights
        manifest.task_state = task.state()
        if accelerator.is_main_process:
            write_manifest(output_dir, manifest)
    if accelerator.is_main_process:
        header = {"task": config.task, "base_model": config.model, "model_directory": str(output_dir),
                  **{f"{split}_data": src for split, src in sources.items()},
                  "optimizer_steps": state.global_step, "best_step": state.best_step,
                  "metric_for_best": trainer.metric}
        report = write_evaluation(output_dir, task, metrics, header, split_reports, output_dir / "train_log.jsonl",
                                  report_settings)
        write_model_card(output_dir, manifest, describe_training_data(config, task, raw, sources), report, metrics,
                         {"step": state.global_step, "epoch": round(state.epoch, 4),
                          "train_runtime_s": round(state.train_runtime_s, 1), "best_step": state.best_step,
                          "metric_for_best": trainer.metric, "best_metric": state.best_metric})
        for split, part in split_reports.items():
            console.print(summary_markdown(split, part), markup=False)  # Markdown, shown as written
    accelerator.wait_for_everyone()
    return TrainResult(output_dir=output_dir, metrics=metrics, global_step=state.global_step,
                       train_runtime_s=state.train_runtime_s, train_tokens=state.train_tokens,
                       train_padded_tokens=state.train_padded_tokens, best_metric=state.best_metric)


def evaluate_before_training(accelerator: Accelerator, model: nn.Module, task: Task, raw: Any,
                             features: dict[str, Dataset], batch_size: int) -> dict[str, dict[str, Any]]:
    """The validation and test figures of the starting model, for tasks that report them
    (``evaluate_before_training``, e.g. masked-LM pretraining: how much did it adapt?)."""
    if not task.evaluate_before_training:
        return {}
    before = {}
    for split in ("validation", "test"):
        if split in raw:
            metrics, _, _ = evaluate_raw(accelerator, model, task, raw[split], features[split], batch_size)
            before[split] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return before


def describe_training_data(config: TrainConfig, task: Task, raw: Any, sources: dict[str, str]) -> list[dict[str, Any]]:
    """The model card's account of the data: sources, sizes, hashes and label distributions
    (``label_counts``, where the task has it)."""
    counts = {split: split_counts for split, ds in raw.items() if (split_counts := task.label_counts(ds)) is not None}
    return describe_data(config.to_dict(), sources, {split: len(ds) for split, ds in raw.items()}, counts)


def input_list(inputs: Any) -> list[Any]:
    """The inputs of one ``predict`` call as a list; one bare input (a string, a dict, a number)
    is an error rather than being iterated (a string's characters, a dict's keys)."""
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        raise TaskError(f"predict: takes a list of inputs, not a single {type(inputs).__name__}; "
                        f"for one input, wrap it in a list: predict([input])")
    return list(inputs)


PRECISIONS = ("fp32", "bf16")
EXPORT_FORMATS = ("safetensors", "onnx")


class Predictor:
    """A trained model loaded from its directory, ready to predict and evaluate.

    Python code shipped in the directory runs only with ``trust_remote_code``, whatever the
    training run's settings in the manifest say: a model directory cannot grant itself trust."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64, trust_remote_code: bool = False,
                 precision: str = "fp32", backend: str = "auto", **column_overrides: str | None) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.manifest = read_manifest(self.model_dir)
        # "torch" or "onnxruntime" (a directory written by `export --format onnx`)
        self.backend = resolve_backend(backend, self.model_dir, onnx_only=self.manifest.onnx is not None)
        if self.backend == "onnxruntime" and precision != "fp32":
            raise ConfigError(f"precision: {precision} is for the torch backend; an ONNX model runs as it was "
                              f"exported (fp32, or int8 with --quantize int8): use precision fp32")
        config = dict(self.manifest.config)
        config.update({k: v for k, v in column_overrides.items() if v is not None})
        self.config = config
        self.batch_size = batch_size
        task_class = get_task_class(self.manifest.task)
        self.task: Task = task_class(task_settings(config, task_class))
        self.tokenizer = load_tokenizer(str(self.model_dir), trust_remote_code)
        self.encoder_config = load_encoder_config(self.model_dir, trust_remote_code)
        self._check_max_length()
        self.task.load_state(self.manifest.task_state, self.tokenizer)
        if self.backend == "onnxruntime":  # an ONNX Runtime session, called as the torch model is
            self.accelerator = new_accelerator(mixed_precision="no")
            self.model: Any = OnnxTaskModel(self.model_dir / ONNX_FILE)
            return
        self.model = self._saved_model(trust_remote_code)
        # bf16: the forward pass runs under autocast (matmuls in bf16, outputs back in fp32).
        self.accelerator = new_accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
        self.model = self.accelerator.prepare_model(self.model, evaluation_mode=True)
        self.model.eval()

    @property
    def is_adapter(self) -> bool:
        return bool(self.config.get("lora"))

    def _saved_model(self, trust: bool) -> nn.Module:
        return saved_task_model(self.model_dir, self.manifest, self.task, trust)

    def _check_max_length(self) -> None:
        """A manifest written by hand may ask for longer inputs than the encoder has positions for."""
        limit = position_limit(self.encoder_config)
        max_length = self.task.settings.max_length
        if limit is not None and max_length > limit:
            raise ModelDirError(f"{self.model_dir / MANIFEST}: max_length {max_length} is more than the encoder "
                                f"reads ({limit} tokens, from its config.json); set max_length to {limit} or less")

    def export(self, output_dir: str | Path, merge: bool = False) -> Path:
        """Write a self-contained model directory that loads without peft: the LoRA updates
        merged into the encoder (``merge``), or a copy of full weights."""
        output_dir = Path(output_dir)
        if self.backend == "onnxruntime":
            raise ModelDirError(f"{self.model_dir}: holds an ONNX model; export the model directory it was made from")
        if self.is_adapter and not merge:
            raise ModelDirError(f"{self.model_dir}: holds a LoRA adapter; pass --merge (merge=True) to export it "
                                "merged into the encoder")
        if (output_dir / MANIFEST).exists():
            raise OutputDirError(f"{output_dir}: already holds a model; choose another directory")
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model = merge_adapter(copy.deepcopy(model)) if self.is_adapter else model
        config = {**self.manifest.config, "lora": False}
        manifest = Manifest(task=self.manifest.task, task_state=self.manifest.task_state, config=config,
                            base_model=self.manifest.base_model, versions=package_versions())
        save_model_dir(output_dir, model, self.tokenizer, self.encoder_config, manifest)
        return output_dir

    @property
    def labels(self) -> list[str] | None:
        return self.task.labels

    def predict(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        """Predict for Python inputs: strings, (text, text_pair) pairs, token lists or dicts of
        columns, as the task reads them (e.g. {"question": ..., "context": ...} for QA)."""
        rows = self.task.to_examples(input_list(inputs))
        if not rows:
            return []
        return self.predict_dataset(input_dataset(rows, "input"))

    def predict_dataset(self, raw: Dataset, source: str = "input") -> list[dict[str, Any]]:
        self.task.validate(raw, "predict", source)
        return predict_raw(self.accelerator, self.model, self.task, raw, self.batch_size)

    def predict_file(self, path: str | Path, file_format: str = "auto",
                     column_names: list[str] | None = None) -> list[dict[str, Any]]:
        return self.predict_dataset(self.read_file(path, file_format, column_names), str(path))

    def read_file(self, path: str | Path, file_format: str = "auto", column_names: list[str] | None = None) -> Dataset:
        """Read a file the way this model's task reads its data. ``column_names`` names the columns
        of a CSV or TSV file without a header; None: as the training run's CSV and TSV files (any
        other format has its own names), ``[]``: the file has a header."""
        fallback = file_format_fallback(self.task)
        if column_names is None and detect_format(Path(path), file_format, fallback) in ("csv", "tsv"):
            column_names = self.config.get("column_names")
        return read_file(path, file_format, fallback_format=fallback, column_names=column_names or None)

    def evaluate_dataset(self, raw: Dataset, source: str) -> dict[str, Any]:
        return self.evaluate_with_predictions(raw, source)[0]

    def evaluate_with_predictions(self, raw: Dataset, source: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The metrics of a labelled dataset and the predictions they were computed from."""
        self.task.validate(raw, "test", source)
        features = prepare_features(self.task, raw, "test")
        metrics, predictions, _ = evaluate_raw(self.accelerator, self.model, self.task, raw, features, self.batch_size)
        return metrics, predictions


def export(model_dir: str | Path, output_dir: str | Path, merge: bool = False, trust_remote_code: bool = False,
           format: str = "safetensors", quantize: str | None = None) -> Path:
    """Write ``model_dir`` as a self-contained model that loads without peft (see ``Predictor.export``);
    ``format="onnx"``: as an ONNX model directory (LoRA merged; ``quantize="int8"``: int8 weights),
    which ``load`` runs with onnxruntime (``onnx_export.export_onnx``)."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format: {format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if format == "onnx":
        from .onnx_export import export_onnx

        return export_onnx(resolve_model_dir(model_dir), output_dir, quantize=quantize,
                           trust_remote_code=trust_remote_code)
    if quantize is not None:
        raise ConfigError(f"quantize: {quantize} is for ONNX export; add --format onnx (format=\"onnx\")")
    if read_manifest(model_dir).config.get("lora") and not merge:
        raise ModelDirError(f"{model_dir}: holds a LoRA adapter; pass --merge (merge=True) to export it merged "
                            "into the encoder")
    return load(model_dir, trust_remote_code=trust_remote_code).export(output_dir, merge=merge)


def export_encoder(model_dir: str | Path, output_dir: str | Path, trust_remote_code: bool = False) -> Path:
    """Write the encoder of a model directory (LoRA updates merged) with its tokenizer as a plain
    transformers model, which ``AutoModel.from_pretrained`` loads: after masked-LM pretraining,
    the adapted encoder for any other library. The folder appears whole or not at all."""
    import shutil
    import tempfile

    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OutputDirError(f"{output_dir}: exists and is not empty; choose another directory")
    encoder = saved_encoder(model_dir, trust_remote_code)
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        encoder.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def load(model_dir: str | Path, batch_size: int = 64, trust_remote_code: bool = False, precision: str = "fp32",
         backend: str = "auto", **column_overrides: str | None) -> Predictor:
    """Load a model directory written by ``train``, or the Hub id of one (downloaded, or read from
    the local cache offline); ``trust_remote_code`` lets Python code shipped in it run (a model
    trained with --trust-remote-code needs it again here); ``precision="bf16"`` runs the model under
    bf16 autocast (faster on CPUs with AMX or AVX-512 BF16 and on recent GPUs; outputs differ slightly).
    ``backend``: ``torch``, ``onnxruntime`` (a directory written by ``export --format onnx``) or
    ``auto`` (onnxruntime when the directory holds model.onnx, else torch); ``Predictor.backend``
    says which runs."""
    return Predictor(resolve_model_dir(model_dir), batch_size=batch_size, trust_remote_code=trust_remote_code,
                     precision=precision, backend=backend, **column_overrides)


def evaluate(
    model_dir: str | Path, data: str | Path, output: str | Path | None = None, file_format: str = "auto",
    batch_size: int = 64, plots: bool = True, bootstrap_resamples: int = ReportSettings.bootstrap_resamples,
    seed: int | None = None, trust_remote_code: bool = False, column_names: list[str] | None = None,
    precision: str = "fp32", backend: str = "auto", **column_overrides: str | None,
) -> dict[str, Any]:
    """Evaluate a saved model (a directory, or the Hub id of one) on a labelled file; writes the
    report (metrics.json, report.json, report.md, report.html, plots/) to ``output`` (default:
    ``MODEL_DIR/evaluation/<file name>``; for a Hub id ``evaluation/ORG--NAME/<file name>``) and
    returns the metrics. The training curves come from the model's ``train_log.jsonl``; the
    bootstrap's seed is the training run's unless ``seed`` is given."""
    predictor = load(model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code, precision=precision,
                     backend=backend, **column_overrides)
    raw = predictor.read_file(data, file_format, column_names)
    metrics, predictions = predictor.evaluate_with_predictions(raw, str(data))
    if seed is None:
        seed = int(predictor.config.get("seed", ReportSettings.seed))
    settings = ReportSettings(plots=plots, bootstrap_resamples=bootstrap_resamples, seed=seed)
    name = Path(data).stem
    splits = {name: split_report(predictor.task, predictions, raw, metrics, settings)}
    out = Path(output) if output else evaluation_dir(model_dir, name)
    header = {"task": predictor.manifest.task, "base_model": predictor.manifest.base_model,
              "model_directory": str(model_dir), "data": str(data)}
    write_evaluation(out, predictor.task, {name: metrics}, header, splits, predictor.model_dir / "train_log.jsonl",
                     settings)
    return metrics
