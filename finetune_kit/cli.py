"""The ``finetune-kit`` command line: train, evaluate, compare, predict, embed, export, push, serve, tasks, demo.

Bad input ends with one line, ``error: ...``, and exit status 2; no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from .train_options import PASS_UNKNOWN_OPTIONS, given_settings, is_config_file, split_shortcuts, with_setting_options

app = typer.Typer(
    help="Fine-tune pretrained encoders (BERT-style) for NLP tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STDOUT = "-"  # predict --output -: the predictions go to standard output
TRUST_SAVED_HELP = ("Run Python code shipped in the model directory (a model trained with --trust-remote-code "
                    "needs it again; only for models you trust).")
PRECISION_HELP = ("fp32, or bf16: the model runs under bf16 autocast (faster on CPUs with AMX/AVX-512 BF16 and "
                  "recent GPUs; scores differ slightly).")
BACKEND_HELP = ("auto (onnxruntime for a directory written by `export --format onnx`, else torch), torch or "
                "onnxruntime.")


def _user_errors() -> tuple[type[BaseException], ...]:
    from .adapters import AdapterError
    from .api import OutputDirError
    from .config import ConfigError
    from .embeddings import EmbeddingError
    from .hub import HubUnreachableError
    from .files import OutputWriteError
    from .modeling import ModelDirError
    from .push import PushError
    from .task import DataError, TaskError

    return (AdapterError, ConfigError, DataError, EmbeddingError, TaskError, HubUnreachableError, ModelDirError,
            OutputDirError, OutputWriteError, PushError)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a user error becomes a one-line message and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as exc:
        _fail(str(exc))


def _names(text: str | None) -> list[str] | None:
    """``--column-names``: None when not given (the training run's); "" gives [] (a header line)."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


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


@app.command(context_settings=PASS_UNKNOWN_OPTIONS)
@with_setting_options
def train(
    args: Optional[list[str]] = typer.Argument(
        None, help="Optional CONFIG.yaml with the settings, then key=value overrides (e.g. epochs=2)."),
    **given: Any,
) -> None:
    """Fine-tune an encoder: from options, or from a YAML file plus key=value overrides.

    A task's own options are set with -o KEY=VALUE, and some also with a shortcut flag the task
    declares; `finetune-kit tasks NAME` lists both.
    """
    from .api import train as run_train

    shortcut_values, args = _run(split_shortcuts, list(args or []), given["task"])
    config_path = None
    if args and is_config_file(args[0]):
        config_path = args.pop(0)
    bad = [a for a in args if "=" not in a]
    if bad:
        _fail(f"unexpected argument '{bad[0]}'; give CONFIG.yaml first, then key=value overrides")
    settings = _run(given_settings, given)
    task_options = {**settings.pop("task_options", {}), **shortcut_values}  # a shortcut beats -o
    if task_options:
        settings["task_options"] = task_options
    _quiet_libraries()
    result = _run(run_train, config_path, args, **settings)
    if _main_process():
        typer.echo(f"Model, model card (README.md), metrics.json and the report (report.html, report.md, "
                   f"report.json) written to {result.output_dir}")


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR",
                                     help="A model directory written by `finetune-kit train`, or the Hub id of one."),
    data: Path = typer.Option(..., "--data", help="Labelled file to evaluate on (.csv, .tsv, .jsonl, .conll)."),
    output: Optional[Path] = typer.Option(None, help="Report directory (default: MODEL_DIR/evaluation/<file name>; "
                                          "for a Hub id evaluation/ORG--NAME/<file name>)."),
    file_format: str = typer.Option("auto", help="auto (by extension), csv, tsv, jsonl or conll."),
    column_names: Optional[str] = typer.Option(
        None, metavar="NAMES", help="The columns of a CSV/TSV file without a header line, comma-separated "
        "(default: as in training; \"\": the file has a header)."),
    batch_size: int = typer.Option(64, help="Evaluation batch size."),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
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
    from .hub import evaluation_dir

    _quiet_libraries()
    if bootstrap_resamples < 0:
        _fail(f"--bootstrap-resamples: {bootstrap_resamples} is not allowed; it must be >= 0")
    out = output or evaluation_dir(model_dir, data.stem)
    _check_output(check_output_directory, out, "--output" if output else "the report directory")
    _run(run_evaluate, model_dir, data, out, file_format=file_format, column_names=_names(column_names),
         batch_size=batch_size, plots=plots,
         bootstrap_resamples=bootstrap_resamples, seed=seed, trust_remote_code=trust_remote_code,
         precision=precision, backend=backend, text_column=text_column, text_pair_column=text_pair_column,
         label_column=label_column)
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
    from .compare import CompareError, comparison_table
    from .markdown import markdown_table

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
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR",
                                     help="A model directory written by `finetune-kit train`, or the Hub id of one."),
    input_file: Path = typer.Option(
        ..., "--input", help="File to predict for (.csv, .tsv, .jsonl, .conll); labels are ignored."),
    output: Path = typer.Option(..., "--output", help="Output file: JSON Lines, one line per input in input order "
                                "(QA: the official {id: answer} JSON, n-best lists beside it); - for standard "
                                "output."),
    file_format: str = typer.Option("auto", help="auto (by extension), csv, tsv, jsonl or conll."),
    column_names: Optional[str] = typer.Option(
        None, metavar="NAMES", help="The columns of a CSV/TSV file without a header line, comma-separated "
        "(default: as in training; \"\": the file has a header)."),
    batch_size: int = typer.Option(64, help="Prediction batch size."),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
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
                     precision=precision, backend=backend, text_column=text_column,
                     text_pair_column=text_pair_column)
    predictions = _run(predictor.predict_file, input_file, file_format, _names(column_names))
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
    export_format: str = typer.Option("safetensors", "--format", help="safetensors (a torch model directory), or "
                                      "onnx: the model as model.onnx (LoRA merged), which predict, evaluate, serve "
                                      "and load run with onnxruntime."),
    quantize: Optional[str] = typer.Option(None, "--quantize", metavar="int8",
                                           help="With --format onnx: the encoder layers' products in int8 (weights "
                                           "per channel, activations per token as they come), smaller and faster "
                                           "on CPUs; scores differ slightly."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_SAVED_HELP),
) -> None:
    """Write a self-contained model directory that loads without peft (LoRA merged with --merge),
    with --format onnx an ONNX model directory for onnxruntime, or with --encoder the encoder
    alone as a plain transformers model."""
    from .api import EXPORT_FORMATS
    from .api import export as run_export
    from .api import export_encoder

    _quiet_libraries()
    if export_format not in EXPORT_FORMATS:
        _fail(f"--format: {export_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if encoder:
        if export_format != "safetensors" or quantize is not None:
            _fail("--encoder writes the encoder as a transformers model (safetensors); --format onnx and --quantize "
                  "are for the task model")
        written = _run(export_encoder, model_dir, output, trust_remote_code=trust_remote_code)
        typer.echo(f"Encoder written to {written} (loads with transformers' AutoModel.from_pretrained)")
        return
    written = _run(run_export, model_dir, output, merge=merge, trust_remote_code=trust_remote_code,
                   format=export_format, quantize=quantize)
    if export_format == "onnx":
        from .onnx_export import describe

        typer.echo(f"ONNX model written to {written} ({describe(written)}); predict, evaluate, serve and load run "
                   f"it with onnxruntime")
        return
    typer.echo(f"Model written to {written}")


@app.command()
def push(
    model_dir: Path = typer.Argument(..., metavar="DIR", help="A model directory written by `finetune-kit train`."),
    repo_id: str = typer.Option(..., "--repo-id", help="The Hub model repository: NAME or ORGANISATION/NAME; "
                                "created if it does not exist."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (an existing one keeps "
                                 "its visibility)."),
    revision: Optional[str] = typer.Option(None, help="Branch to commit to (created if needed; default: main)."),
    commit_message: Optional[str] = typer.Option(None, help="The commit's message."),
) -> None:
    """Upload a model directory with its card (README.md) and report to the Hugging Face Hub: the
    model, tokenizer, finetune_kit.json, card, report, plots and training log; not checkpoints/
    nor evaluation/. The token comes from HF_TOKEN or `hf auth login`."""
    from .push import push as run_push
    from .push import upload_files

    url = _run(run_push, model_dir, repo_id, private=private, revision=revision, commit_message=commit_message)
    typer.echo(f"{len(upload_files(model_dir))} files pushed to {repo_id}: {url}")


@app.command("tasks")
def list_tasks(
    name: Optional[str] = typer.Argument(None, help="A task: show its defaults and its options (-o)."),
) -> None:
    """List the registered tasks, built-in and from third-party plugins; with a NAME, describe that
    task: its defaults and the options it takes."""
    from rich.table import Table
    from rich.text import Text

    from .console import print_table
    from .registry import available_tasks, get_task_class, task_origin

    if name is not None:
        _describe_task(name)
        return
    table = Table("task", "provided by", "description")
    for name in available_tasks():
        try:
            description = get_task_class(name).description
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            description = f"(cannot be loaded: {exc})"
        table.add_row(*map(Text, (name, task_origin(name), str(description))))  # as written: no rich markup
    print_table(table)


def _describe_task(name: str) -> None:
    from .console import print_table
    from .registry import get_task_class, task_origin
    from .task_help import facts_text, options_table

    task_class = _run(get_task_class, name)
    typer.echo(f"{name} (provided by {task_origin(name)}): {task_class.description}\n")
    typer.echo(facts_text(task_class))
    if not task_class.task_options:
        typer.echo("\nIt takes no options.")
        return
    typer.echo("\nOptions (-o name=value):")
    print_table(options_table(task_class.task_options))


@app.command()
def serve(
    model_dir: str = typer.Argument(..., metavar="MODEL_DIR",
                                    help="A model directory written by `finetune-kit train`, or the Hub id of one."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_batch_size: int = typer.Option(64, help="The most inputs one batch gathers from concurrent requests (also "
                                       "the model's batch size)."),
    max_wait_ms: float = typer.Option(5.0, help="How long a batch waits for more requests after its first, in ms."),
    max_inputs: int = typer.Option(256, help="The most inputs one request may hold."),
    max_input_chars: int = typer.Option(100_000, help="The most characters one input may hold."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, help="The most bytes a request body may hold."),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_SAVED_HELP),
) -> None:
    """Serve a trained model over HTTP: POST /predict with {"inputs": [...]}, GET /health, GET /info,
    the API docs at /docs and a page to try the model at /. Concurrent requests are predicted
    together in batches."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        _fail(f'serve needs FastAPI and uvicorn ({exc.name} is not installed): pip install "finetune-kit[serve]"')
    from .serve import ServeLimits, create_app, load_predictor

    for name, number, least in (("--max-batch-size", max_batch_size, 1), ("--max-wait-ms", max_wait_ms, 0),
                                ("--max-inputs", max_inputs, 1), ("--max-input-chars", max_input_chars, 1),
                                ("--max-body-bytes", max_body_bytes, 1)):
        if number < least:
            _fail(f"{name}: {number:g} is not allowed; it must be >= {least}")
    _quiet_libraries()
    predictor = _run(load_predictor, model_dir, max_batch_size, precision=precision, backend=backend,
                     trust_remote_code=trust_remote_code)
    limits = ServeLimits(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_inputs=max_inputs,
                         max_input_chars=max_input_chars, max_body_bytes=max_body_bytes)
    server = create_app(predictor, limits, name=Path(model_dir).name)
    typer.echo(f"Serving the {predictor.manifest.task} model {model_dir} on http://{host}:{port} "
               f"(try it at /, API docs at /docs)")
    uvicorn.run(server, host=host, port=port)


@app.command()
def demo(
    output: Path = typer.Option(Path("finetune-kit-demo"), help="Where the demo model and report go."),
    epochs: Optional[float] = typer.Option(None, help="Training epochs (default: the demo's, "
                                                      "enough to learn the bundled data)."),
    model: Optional[str] = typer.Option(None, help="Encoder (default: the packaged all-MiniLM-L6-v2)."),
) -> None:
    """Fine-tune the packaged encoder on the bundled support-ticket data, offline, in minutes."""
    from .demo import run_demo

    _quiet_libraries()
    _run(run_demo, output, model=model, **({} if epochs is None else {"epochs": epochs}))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
