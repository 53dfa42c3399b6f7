"""The ``finetune-kit`` command line: train, evaluate, compare, predict, embed, export, tasks, demo.

Bad input ends with one line, ``error: ...``, and exit status 2; no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(
    help="Fine-tune pretrained encoders (BERT-style) for NLP tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STDOUT = "-"  # predict --output -: the predictions go to standard output
TRUST_SAVED_HELP = ("Run Python code shipped in the model directory (a model trained with --trust-remote-code "
                    "needs it again; only for models you trust).")


def _user_errors() -> tuple[type[BaseException], ...]:
    from .adapters import AdapterError
    from .api import OutputDirError
    from .config import ConfigError
    from .embeddings import EmbeddingError
    from .hub import HubUnreachableError
    from .files import OutputWriteError
    from .modeling import ModelDirError
    from .task import DataError, TaskError

    return (AdapterError, ConfigError, DataError, EmbeddingError, TaskError, HubUnreachableError, ModelDirError,
            OutputDirError, OutputWriteError)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a user error becomes a one-line message and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as exc:
        _fail(str(exc))


def _main_process() -> bool:
    """False in the other processes of an ``accelerate launch`` run, so messages print once."""
    from accelerate import PartialState

    return PartialState().is_main_process


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _check_output(check: Any, path: Path, option: str = "--output") -> None:
    """Fail before any work when ``check`` (``check_output_file`` or ``check_output_directory``)
    finds that ``path`` cannot be written."""
    from .files import OutputWriteError

    try:
        check(path)
    except OutputWriteError as exc:
        _fail(f"{option} {exc}")


def _comma_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def train(
    args: Optional[list[str]] = typer.Argument(
        None, help="Optional CONFIG.yaml with the settings, then key=value overrides (e.g. epochs=2)."),
    task: Optional[str] = typer.Option(None, help="Task name; `finetune-kit tasks` lists them."),
    model: Optional[str] = typer.Option(None, help="Pretrained encoder: local directory or Hub id."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Training file (.csv, .tsv, .jsonl, .conll)."),
    validation_file: Optional[str] = typer.Option(None, "--validation", help="Validation file."),
    test_file: Optional[str] = typer.Option(None, "--test", help="Test file, evaluated at the end."),
    output_dir: Optional[str] = typer.Option(None, "--output", help="Directory for the model, metrics and report."),
    dataset: Optional[str] = typer.Option(None, help="Hub dataset name instead of files (needs a network)."),
    dataset_config: Optional[str] = typer.Option(None, help="Hub dataset configuration."),
    file_format: Optional[str] = typer.Option(None, help="auto (by extension), csv, tsv, jsonl or conll."),
    text_column: Optional[str] = typer.Option(
        None, help="Text column (default: the task's: text; tokens for tagging)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column of pair tasks (default: text_pair)."),
    label_column: Optional[str] = typer.Option(
        None, help="Label column (default: the task's: label; tags for tagging)."),
    max_train_samples: Optional[int] = typer.Option(None, help="Use only the first N training rows."),
    validation_fraction: Optional[float] = typer.Option(
        None, help="Hold out this share of the training rows (the last ones) as validation."),
    epochs: Optional[float] = typer.Option(None, help="Training epochs (default: 3)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size per process (default: 32)."),
    eval_batch_size: Optional[int] = typer.Option(None, help="Evaluation batch size (default: 64)."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate (default: 5e-5)."),
    head_learning_rate: Optional[float] = typer.Option(
        None, help="Peak learning rate of the task head (default: the task's, else --learning-rate)."),
    lora: Optional[bool] = typer.Option(None, "--lora", help="Train LoRA adapters in the encoder; the head trains fully."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default: 8)."),
    lora_alpha: Optional[float] = typer.Option(None, help="LoRA alpha; updates scale by alpha/r (default: 16)."),
    lora_dropout: Optional[float] = typer.Option(None, help="Dropout on the LoRA input (default: 0.1)."),
    lora_target_modules: Optional[str] = typer.Option(
        None, help="Comma-separated linear layer names for LoRA, e.g. query,value (default: every linear "
                   "layer of the transformer blocks)."),
    freeze_embeddings: Optional[bool] = typer.Option(None, "--freeze-embeddings", help="Keep the embeddings frozen."),
    train_top_layers: Optional[int] = typer.Option(
        None, help="Train only the top K encoder layers and the head (default: all; 0: the head alone)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (default: 0)."),
    warmup_ratio: Optional[float] = typer.Option(None, help="Share of steps for linear warm-up (default: 0)."),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Batches per optimizer step (default: 1)."),
    max_grad_norm: Optional[float] = typer.Option(None, help="Gradient clipping norm (default: 1.0)."),
    max_length: Optional[int] = typer.Option(None, help="Longest input in tokens (default: the task's: 128; 384 for QA)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: 42)."),
    mixed_precision: Optional[str] = typer.Option(None, help="no, fp16 or bf16 (default: no)."),
    eval_steps: Optional[int] = typer.Option(None, help="Also evaluate every N optimizer steps."),
    metric_for_best: Optional[str] = typer.Option(None, help="Metric that picks the best checkpoint."),
    greater_is_better: Optional[bool] = typer.Option(
        None, "--greater-is-better/--lower-is-better",
        help="Whether a higher or a lower --metric-for-best is better (default: as the task declares it: lower "
             "for the loss and e.g. perplexity, higher for any other metric)."),
    early_stopping_patience: Optional[int] = typer.Option(None, help="Stop after N evaluations without improvement."),
    save_steps: Optional[int] = typer.Option(
        None, help="Also write a checkpoint every N optimizer steps (default: after each epoch only)."),
    save_total_limit: Optional[int] = typer.Option(
        None, help="Keep the N newest checkpoints in OUTPUT/checkpoints; 0 writes none (default: 1)."),
    resume: Optional[bool] = typer.Option(
        None, "--resume", help="Continue the run from the latest complete checkpoint in --output."),
    resume_from: Optional[str] = typer.Option(
        None, metavar="DIR", help="Continue the run from this checkpoint folder (OUTPUT/checkpoints/step-N)."),
    resume_anyway: Optional[bool] = typer.Option(
        None, "--resume-anyway", help="Resume even if the training or validation data changed since the checkpoint "
                                      "(a warning instead of an error)."),
    group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length",
                                                   help="Batch examples of similar length (default: on)."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace a model already in --output."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code",
                                                     help="Run model code from the Hub repository."),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", "-o",
                                                    help="Task-specific option key=value (repeatable)."),
    crf: bool = typer.Option(False, "--crf", help="token-classification: a CRF layer over the tags (-o crf=true)."),
    masking: Optional[str] = typer.Option(
        None, help="masked-lm: token, whole-word or span (SpanBERT) masking (-o masking=...; default: token)."),
    report_plots: Optional[bool] = typer.Option(None, "--report-plots/--no-report-plots",
                                                help="PNG plots in the report (default: on)."),
    bootstrap_resamples: Optional[int] = typer.Option(
        None, help="Bootstrap resamples for the report's 95% intervals; 0: none (default: 1000)."),
) -> None:
    """Fine-tune an encoder: from options, or from a YAML file plus key=value overrides."""
    from .api import train as run_train
    from .config import ConfigError, apply_overrides

    args = list(args or [])
    config_path = None
    if args and not ("=" in args[0]) and args[0].endswith((".yaml", ".yml")):
        config_path = args.pop(0)
    bad = [a for a in args if "=" not in a]
    if bad:
        _fail(f"unexpected argument '{bad[0]}'; give CONFIG.yaml first, then key=value overrides")
    task_options: dict[str, Any] = {}
    if task_option:
        try:
            task_options = apply_overrides({}, [f"task_options.{item}" for item in task_option])["task_options"]
        except ConfigError as exc:
            _fail(str(exc))
    if crf:
        task_options["crf"] = True
    if masking is not None:
        task_options["masking"] = masking
    settings = {k: v for k, v in {
        "task": task, "model": model, "train_file": train_file, "validation_file": validation_file,
        "test_file": test_file, "output_dir": output_dir, "dataset": dataset, "dataset_config": dataset_config,
        "file_format": file_format, "text_column": text_column, "text_pair_column": text_pair_column,
        "label_column": label_column, "max_train_samples": max_train_samples,
        "validation_fraction": validation_fraction, "epochs": epochs,
        "max_steps": max_steps, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
        "learning_rate": learning_rate, "head_learning_rate": head_learning_rate, "weight_decay": weight_decay,
        "lora": lora, "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "lora_target_modules": _comma_list(lora_target_modules), "freeze_embeddings": freeze_embeddings,
        "train_top_layers": train_top_layers,
        "warmup_ratio": warmup_ratio,
        "gradient_accumulation_steps": gradient_accumulation_steps, "max_grad_norm": max_grad_norm,
        "max_length": max_length, "seed": seed, "mixed_precision": mixed_precision, "eval_steps": eval_steps,
        "metric_for_best": metric_for_best, "greater_is_better": greater_is_better,
        "early_stopping_patience": early_stopping_patience,
        "save_steps": save_steps, "save_total_limit": save_total_limit, "resume": resume, "resume_from": resume_from,
        "resume_anyway": resume_anyway,
        "group_by_length": group_by_length, "overwrite": overwrite, "trust_remote_code": trust_remote_code,
        "task_options": task_options or None, "report_plots": report_plots,
        "bootstrap_resamples": bootstrap_resamples,
    }.items() if v is not None}
    _quiet_libraries()
    result = _run(run_train, config_path, args, **settings)
    if _main_process():
        typer.echo(f"Model, model card (README.md), metrics.json and the report (report.html, report.md, "
                   f"report.json) written to {result.output_dir}")


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="A model directory written by `finetune-kit train`."),
    data: Path = typer.Option(..., "--data", help="Labelled file to evaluate on (.csv, .tsv, .jsonl, .conll)."),
    output: Optional[Path] = typer.Option(None, help="Report directory (default: MODEL_DIR/evaluation/<file name>)."),
    file_format: str = typer.Option("auto", help="auto (by extension), csv, tsv, jsonl or conll."),
    batch_size: int = typer.Option(64, help="Evaluation batch size."),
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the one used in training)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column (default: as in training)."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: as in training)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots in the report."),
    bootstrap_resamples: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals; 0: none."),
    seed: Optional[int] = typer.Option(None, help="Seed of the bootstrap (default: the training run's seed)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_SAVED_HELP),
) -> None:
    """Evaluate a trained model on a labelled file; writes the report: report.html (open it in a
    browser), report.md, report.json, metrics.json and plots/."""
    from .api import evaluate as run_evaluate
    from .files import check_output_directory

    _quiet_libraries()
    if bootstrap_resamples < 0:
        _fail(f"--bootstrap-resamples: {bootstrap_resamples} is not allowed; it must be >= 0")
    out = output or model_dir / "evaluation" / data.stem
    _check_output(check_output_directory, out, "--output" if output else "the report directory")
    _run(run_evaluate, model_dir, data, out, file_format=file_format, batch_size=batch_size, plots=plots,
         bootstrap_resamples=bootstrap_resamples, seed=seed, trust_remote_code=trust_remote_code,
         text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"Report written to {out} (report.html, report.md, report.json, metrics.json)")


@app.command()
def compare(
    directories: list[Path] = typer.Argument(..., metavar="DIR...",
                                             help="Run directories (train --output) or evaluation directories."),
    all_settings: bool = typer.Option(False, "--all-settings",
                                      help="Show every compared setting, not only task, model and those that differ."),
    output: Optional[Path] = typer.Option(None, help="Also write the table to this Markdown file."),
) -> None:
    """Runs side by side: their settings and metrics (with 95% intervals where reported)."""
    from .files import atomic_write_text, check_output_file
    from .report import CompareError, comparison_table, markdown_table

    if output is not None:
        _check_output(check_output_file, output)
    try:
        columns, rows = comparison_table(directories, all_settings=all_settings)
    except CompareError as exc:
        _fail(str(exc))
    text = markdown_table(columns, rows)
    typer.echo(text)
    if output is not None:
        _run(atomic_write_text, output, text + "\n")


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="A model directory written by `finetune-kit train`."),
    input_file: Path = typer.Option(
        ..., "--input", help="File to predict for (.csv, .tsv, .jsonl, .conll); labels are ignored."),
    output: Path = typer.Option(..., "--output", help="Output file: JSON Lines, one line per input in input order "
                                "(QA: the official {id: answer} JSON, n-best lists beside it); - for standard "
                                "output."),
    file_format: str = typer.Option("auto", help="auto (by extension), csv, tsv, jsonl or conll."),
    batch_size: int = typer.Option(64, help="Prediction batch size."),
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the one used in training)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column (default: as in training)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_SAVED_HELP),
) -> None:
    """Predict with a trained model; writes one JSON line per input: the label and its score, or for
    tagging the tokens, their tags and the entities."""
    from .api import load
    from .files import check_output_file

    _quiet_libraries()
    to_stdout = str(output) == STDOUT
    if not to_stdout:
        _check_output(check_output_file, output)
    predictor = _run(load, model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code,
                     text_column=text_column, text_pair_column=text_pair_column)
    predictions = _run(predictor.predict_file, input_file, file_format)
    if not to_stdout:
        paths = _write_predictions(predictor.task, predictions, output)
        typer.echo(f"{len(predictions)} predictions written to {', '.join(map(str, paths))}")
        return
    left_out = _print_predictions(predictor.task, predictions)
    summary = f"{len(predictions)} predictions written to standard output"
    if left_out:
        summary += f"; not written: {', '.join(left_out)} (only beside a file: --output OUTPUT)"
    typer.echo(summary, err=True)  # standard output holds the predictions alone


def _write_predictions(task: Any, predictions: list[dict[str, Any]], output: Path) -> list[Path]:
    """Write the predictions with the task's writer (``write_predictions``: JSON Lines unless the
    task says otherwise); returns the files written."""
    return [Path(p) for p in _run(task.write_predictions, predictions, output)]


def _print_predictions(task: Any, predictions: list[dict[str, Any]]) -> list[str]:
    """Put on standard output what ``--output OUTPUT`` would hold; returns the names of the files
    the task writes beside OUTPUT (e.g. QA's n-best lists), which are left out."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        written, *beside = _write_predictions(task, predictions, Path(folder) / "OUTPUT")
        typer.echo(written.read_text(encoding="utf-8"), nl=False)
    return [p.name for p in beside]


@app.command()
def embed(
    model: str = typer.Argument(..., metavar="MODEL_OR_DIR",
                                help="Pretrained encoder (local directory or Hub id) or a finetune-kit model directory."),
    input_file: Path = typer.Option(..., "--input", help="Texts: plain text, one per line (an empty line included), "
                                    "or .jsonl with a text column (a string, or a list of words)."),
    output: Path = typer.Option(..., "--output", help=".npy or .safetensors (with X.index.jsonl beside it) or .jsonl."),
    level: str = typer.Option("text", help="token (one vector per subword, specials left out), word or text."),
    word_pooling: str = typer.Option("first", help="word level: first or mean of the word's subwords."),
    text_pooling: str = typer.Option("mean", help="text level: mean of the text's tokens (specials left out) or cls."),
    layer: str = typer.Option("last", help="last, last4 (mean of the last four layers) or a hidden-states index "
                              "(0: the embedding layer's output, k: layer k's, negative: from the end)."),
    batch_size: int = typer.Option(32, help="Windows per forward pass."),
    max_length: Optional[int] = typer.Option(
        None, help="Longest window in tokens, special tokens included (default: 512 or the model's maximum)."),
    stride: Optional[int] = typer.Option(None, help="Tokens two windows of a long text share (default: a quarter "
                                         "of the window)."),
    text_column: str = typer.Option("text", help="Text column of a .jsonl input."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1... (default: cuda when there is one)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Run model code from the Hub repository."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar (on a terminal)."),
) -> None:
    """Contextual embeddings of the texts in a file: per token, word or text, from any layer."""
    from .embeddings import embed as run_embed
    from .embeddings import output_paths

    _quiet_libraries()
    result = _run(run_embed, model, input=input_file, output=output, level=level, word_pooling=word_pooling,
                  text_pooling=text_pooling, layer=layer, batch_size=batch_size, max_length=max_length,
                  stride=stride, text_column=text_column, progress=progress,
                  trust_remote_code=trust_remote_code, device=device)
    written = " and ".join(map(str, output_paths(output)))
    if level == "text":
        typer.echo(f"{result.shape[0]} text embeddings (dimension {result.shape[1]}) written to {written}")
    else:
        rows = sum(len(v) for v in result)
        dimension = result[0].shape[1] if result else 0
        typer.echo(f"{rows} {level} embeddings of {len(result)} inputs (dimension {dimension}) written to {written}")


@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="A trained model directory."),
    output: Path = typer.Option(..., "--output", help="Directory for the exported model."),
    merge: bool = typer.Option(False, "--merge", help="Merge a LoRA adapter into the encoder's weights."),
    encoder: bool = typer.Option(False, "--encoder", help="Write only the encoder (LoRA merged) and tokenizer as a "
                                 "plain transformers model (AutoModel.from_pretrained), e.g. after masked-lm."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_SAVED_HELP),
) -> None:
    """Write a self-contained model directory that loads without peft (LoRA merged with --merge),
    or with --encoder the encoder alone as a plain transformers model."""
    from .api import export as run_export
    from .api import export_encoder

    _quiet_libraries()
    if encoder:
        written = _run(export_encoder, model_dir, output, trust_remote_code=trust_remote_code)
        typer.echo(f"Encoder written to {written} (loads with transformers' AutoModel.from_pretrained)")
        return
    written = _run(run_export, model_dir, output, merge=merge, trust_remote_code=trust_remote_code)
    typer.echo(f"Model written to {written}")


@app.command("tasks")
def list_tasks() -> None:
    """List the registered tasks, built-in and from third-party plugins."""
    from rich.table import Table
    from rich.text import Text

    from .console import print_table
    from .registry import available_tasks, get_task_class, task_origin

    table = Table("task", "provided by", "description")
    for name in available_tasks():
        try:
            description = get_task_class(name).description
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            description = f"(cannot be loaded: {exc})"
        table.add_row(*map(Text, (name, task_origin(name), str(description))))  # as written: no rich markup
    print_table(table)


@app.command()
def demo(
    output: Path = typer.Option(Path("finetune-kit-demo"), help="Where the demo model and report go."),
    epochs: float = typer.Option(3.0, help="Training epochs."),
    model: Optional[str] = typer.Option(None, help="Encoder (default: the packaged all-MiniLM-L6-v2)."),
) -> None:
    """Fine-tune the packaged encoder on the bundled support-ticket data, offline, in minutes."""
    from .demo import run_demo

    _quiet_libraries()
    _run(run_demo, output, epochs=epochs, model=model)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
