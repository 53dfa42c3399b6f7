"""What predict, evaluate, compare and training print and write: messages on one line in a log,
output files through links and into pipes, one-line errors for places that cannot be written,
and data text shown, not run, in report.md and the model card."""

import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app
from finetune_kit.model_card import read_front_matter
from finetune_kit.files import OutputWriteError, atomic_write_text
from tests.conftest import NEGATIVE, POSITIVE, write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_encoder, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny text-classification model and a file of 6 texts to predict for."""
    folder = tmp_path_factory.mktemp("outputs")
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(write_csv(folder / "train.csv", rows)),
             output_dir=str(folder / "model"), max_steps=1, batch_size=8, report_plots=False, bootstrap_resamples=0,
             save_total_limit=0)
    inputs = write_csv(folder / "in.csv", [{"text": t} for t in POSITIVE[:3] + NEGATIVE[:3]])
    return folder / "model", inputs


def predict(trained, output, **kwargs):
    model, inputs = trained
    return runner.invoke(app, ["predict", str(model), "--input", str(inputs), "--output", str(output)], **kwargs)


def assert_one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    for part in parts:
        assert part in line, line


def prediction_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 6 and all(set(line) == {"label", "score"} for line in lines)
    return lines


# -- messages in a log ---------------------------------------------------------------------------

@pytest.mark.parametrize("columns", ["40", None])
def test_parameter_line_stays_one_line_in_a_log(tiny_encoder, sentiment_files, tmp_path, capsys, monkeypatch,
                                                columns):
    """stderr captured here is no terminal; rich would break lines at COLUMNS (or 80) columns."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    model = shutil.copytree(tiny_encoder, tmp_path / ("m" * 200))
    fk.train(task="text-classification", model=str(model), train_file=str(sentiment_files["train"]),
             output_dir=str(tmp_path / "out"), max_steps=1, batch_size=8, report_plots=False,
             bootstrap_resamples=0, save_total_limit=0)
    printed = capsys.readouterr().err
    [line] = [line for line in printed.splitlines() if "trainable" in line]
    assert re.fullmatch(rf"text-classification on {re.escape(str(model))}: [\d,]+ trainable of [\d,]+ parameters "
                        r"\(full fine-tuning\); 32 training examples", line), line


def test_markup_and_emoji_codes_in_a_model_path_are_printed_as_written(tiny_encoder, sentiment_files, tmp_path,
                                                                       capsys):
    model = shutil.copytree(tiny_encoder, tmp_path / "[bold]enc[/] :smile:")
    fk.train(task="text-classification", model=str(model), train_file=str(sentiment_files["train"]),
             output_dir=str(tmp_path / "out"), max_steps=1, batch_size=8, report_plots=False,
             bootstrap_resamples=0, save_total_limit=0)
    assert f"on {model}: " in capsys.readouterr().err


def test_tasks_table_is_not_cut_in_a_pipe():
    result = runner.invoke(app, ["tasks"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    from finetune_kit.registry import available_tasks, get_task_class

    for name in available_tasks():
        assert name in result.stdout
        assert get_task_class(name).description in result.stdout


# -- the atomic writers ----------------------------------------------------------------------------

def test_writing_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target)
    atomic_write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def read_fifo_during(fifo: Path, write) -> tuple[object, str | None]:
    """Call ``write()`` while a thread reads the FIFO; returns its result and what was read (None:
    nothing came through the FIFO)."""
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        result = write()
    finally:
        reader.join(timeout=10)
        if reader.is_alive() and stat.S_ISFIFO(os.lstat(fifo).st_mode):
            try:  # nothing was written: let the waiting reader see the end
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            reader.join(timeout=10)
    return result, (received[0] if received else None)


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _, received = read_fifo_during(fifo, lambda: atomic_write_text(fifo, "through the pipe\n"))
    assert received == "through the pipe\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("where", ["directory", "below a file"])
def test_an_unwritable_place_is_one_error_and_leaves_nothing(tmp_path, where):
    blocker = tmp_path / "thing"
    if where == "directory":
        blocker.mkdir()
        path, reason = blocker, "is a directory"
    else:
        blocker.write_text("keep")
        path, reason = blocker / "sub" / "out.txt", f"{blocker} is not a directory"
    with pytest.raises(OutputWriteError, match=re.escape(f"{path}: ") + ".*" + re.escape(reason)):
        atomic_write_text(path, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]
    assert blocker.is_dir() or blocker.read_text() == "keep"


# -- predict, evaluate, compare: where the output goes ---------------------------------------------

def test_predict_into_a_directory_is_one_line_error(trained, tmp_path):
    result = predict(trained, tmp_path)
    assert_one_line_error(result, f"--output {tmp_path}: is a directory")
    assert list(tmp_path.iterdir()) == []


def test_predict_below_a_regular_file_is_one_line_error(trained, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep")
    result = predict(trained, blocker / "p.jsonl")
    assert_one_line_error(result, f"{blocker / 'p.jsonl'}: cannot be written", f"{blocker} is not a directory")
    assert blocker.read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_predict_without_permission_is_one_line_error(trained, tmp_path, monkeypatch):
    """As root every folder is writable; what another user sees is simulated where the file is made."""
    import finetune_kit.files as files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".p.jsonl.x"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    result = predict(trained, tmp_path / "p.jsonl")
    assert_one_line_error(result, f"{tmp_path / 'p.jsonl'}: cannot be written (Permission denied)")
    assert list(tmp_path.iterdir()) == []


def test_predict_through_a_symlink_writes_its_target(trained, tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    result = predict(trained, link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == target.resolve()
    prediction_lines(target.read_text())


def test_predict_into_a_fifo_keeps_the_fifo(trained, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result, received = read_fifo_during(fifo, lambda: predict(trained, fifo))
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    prediction_lines(received)


def test_predict_to_standard_output(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = predict(trained, "-")
    assert result.exit_code == 0, result.output
    prediction_lines(result.stdout)
    assert result.stderr.strip() == "6 predictions written to standard output"
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_standard_output_gets_a_task_writers_main_file_and_leaves_the_others_out(tmp_path, monkeypatch, capsys):
    """A task with its own writer (QA: the official JSON, n-best lists beside it)."""
    from finetune_kit.cli import _print_predictions

    class TwoFileTask:
        def write_predictions(self, predictions, path):
            beside = path.with_name(path.stem + ".nbest.jsonl")
            atomic_write_text(path, json.dumps({p["id"]: p["answer"] for p in predictions}) + "\n")
            atomic_write_text(beside, "nbest\n")
            return [path, beside]

    monkeypatch.chdir(tmp_path)
    left_out = _print_predictions(TwoFileTask(), [{"id": "q1", "answer": "Paris"}])
    assert capsys.readouterr().out == '{"q1": "Paris"}\n'
    assert left_out == ["OUTPUT.nbest.jsonl"] and list(tmp_path.iterdir()) == []


def test_evaluate_into_a_regular_file_is_one_line_error(trained, tmp_path):
    model, _ = trained
    data = write_csv(tmp_path / "test.csv", [{"text": t, "label": "pos"} for t in POSITIVE])
    blocker = tmp_path / "report"
    blocker.write_text("keep")
    result = runner.invoke(app, ["evaluate", str(model), "--data", str(data), "--output", str(blocker)])
    assert_one_line_error(result, f"--output {blocker}: exists and is not a directory")
    assert blocker.read_text() == "keep"


def test_compare_into_a_directory_is_one_line_error(trained, tmp_path):
    model, _ = trained
    result = runner.invoke(app, ["compare", str(model), "--output", str(tmp_path)])
    assert_one_line_error(result, f"--output {tmp_path}: is a directory")
    assert list(tmp_path.iterdir()) == []


# -- data text in report.md and the model card -------------------------------------------------------

SCRIPT, IMAGE, PIPE = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a|b"


def table_rows(markdown: str) -> list[list[str]]:
    """Every table in ``markdown``: its rows (header first) as lists of cells split at unescaped ``|``."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(re.split(r"(?<!\\)\|", line)[1:-1])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_reports_and_model_card_show_data_text_without_running_it(tiny_encoder, tmp_path):
    labels = [SCRIPT, IMAGE, PIPE]
    texts = [f"good movie {SCRIPT}", f"bad film {IMAGE}", "fine | acting\nline two", "[link](javascript:x)"]
    rows = [{"text": f"{text} {k}", "label": labels[k % 3]} for k, text in enumerate(texts * 6)]
    train = write_csv(tmp_path / f"{IMAGE}.csv", rows)
    out = tmp_path / "run"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(train), validation_file=str(train),
             output_dir=str(out), max_steps=1, batch_size=8, report_plots=False, bootstrap_resamples=0,
             save_total_limit=0)
    report = (out / "report.md").read_text(encoding="utf-8")
    card = (out / "README.md").read_text(encoding="utf-8")
    body = card.split("\n---\n", 1)[1]  # the YAML front matter holds the file name as data
    assert read_front_matter(card)["model-index"][0]["results"][0]["dataset"]["name"] == train.name
    for markdown in (report, body):
        assert "<script" not in markdown.lower() and "<img" not in markdown.lower()
        assert not re.search(r"(?<!\\)\[link\]\(javascript", markdown)  # shown as text, not a link
        tables = table_rows(markdown)
        assert tables
        for table in tables:
            assert len({len(row) for row in table}) == 1, table
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report and "a\\|b" in report
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in report  # the training data's file name
    # the confusion matrices (counts in the summary; counts and shares as charts' tables): a column and a row per label
    confusions = [t for t in table_rows(report) if t[0][0].strip().startswith("gold")]
    assert len(confusions) == 3 and all(len(t) == 2 + 3 and len(t[0]) == 1 + 3 for t in confusions)
    # the card's label distribution of the training split: 24 rows, 8 per label
    [distribution] = [t for t in table_rows(body) if [c.strip() for c in t[0]] == ["label", "count"]][:1]
    assert sorted(row[1].strip() for row in distribution[2:]) == ["8", "8", "8"]
