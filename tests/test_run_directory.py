"""The run's output directory: one run at a time writes into it, and a run that fails before
its first step leaves it as it found it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.output_dir import LOCK_FILE, OutputDirError, locked_output_dir
from finetune_kit.cli import app
from tests.conftest import NEGATIVE, POSITIVE, REPO, write_csv

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]

HOLD_LOCK = """
import sys
from pathlib import Path
from finetune_kit.output_dir import locked_output_dir
with locked_output_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def train_args(tiny_encoder: str, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "text-classification", "--model", tiny_encoder, "--train", str(files["train"]),
            "--validation", str(files["validation"]), "--output", str(out), "--batch-size", "8", "--epochs", "1",
            *extra]


@pytest.fixture()
def lock_holder(tmp_path):
    """Start a process that holds the lock on a directory until its input closes."""
    started = []

    def start(directory: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory)], cwd=REPO, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_second_run_into_a_directory_in_use_is_refused(tiny_encoder, sentiment_files, tmp_path, lock_holder):
    out = tmp_path / "out"
    holder = lock_holder(out)
    before = snapshot(out)
    result = CliRunner().invoke(app, train_args(tiny_encoder, sentiment_files, out))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: output_dir: {out} is in use by another run (process {holder.pid}); wait until it ends or choose "
        "another directory"]
    assert snapshot(out) == before == {LOCK_FILE: f"{holder.pid}\n".encode()}

    holder.communicate("")  # the first run ends: it takes its lock file and the folder it made with it
    assert holder.returncode == 0 and not out.exists()
    result = CliRunner().invoke(app, train_args(tiny_encoder, sentiment_files, out))
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and not (out / LOCK_FILE).exists()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    out = tmp_path / "out"
    with locked_output_dir(out):
        with pytest.raises(OutputDirError, match=f"output_dir: {out} is in use by another run "
                                                 rf"\(process {os.getpid()}\)"):
            with locked_output_dir(out):
                pass
        assert (out / LOCK_FILE).is_file()
    assert not out.exists()


def test_a_killed_run_leaves_no_lock_behind(tmp_path, lock_holder):
    out = tmp_path / "out"
    holder = lock_holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_FILE).is_file()  # its file stays, but the lock died with the process
    with locked_output_dir(out):
        assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (out / LOCK_FILE).exists()


def test_an_output_path_through_a_file_is_a_one_line_error(tiny_encoder, sentiment_files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out, reason in ((blocker, f"output_dir: {blocker} exists and is not a directory"),
                        (blocker / "out", f"output_dir: {blocker / 'out'} cannot be created (Not a directory)")):
        result = CliRunner().invoke(app, train_args(tiny_encoder, sentiment_files, out))
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [f"error: {reason}"]
    assert blocker.read_text() == "not a folder"


def test_an_output_directory_without_write_permission_is_a_one_line_error(tiny_encoder, sentiment_files, tmp_path,
                                                                          monkeypatch):
    """What a user who may not write in the folder sees (simulated: the tests run as root)."""
    out = tmp_path / "read-only"
    out.mkdir()
    opened = Path.open

    def refuse_the_lock_file(self, *args, **kwargs):
        if self.name == LOCK_FILE:
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_the_lock_file)
    result = CliRunner().invoke(app, train_args(tiny_encoder, sentiment_files, out))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: output_dir: {out} cannot be written (Permission denied); choose another directory"]
    assert list(out.iterdir()) == []


@pytest.fixture()
def bad_validation(sentiment_files, tmp_path):
    """The sentiment files with a validation label never seen in training."""
    bad = write_csv(tmp_path / "bad_validation.csv", ROWS[:3] + [{"text": "a strange film", "label": "mystery"}])
    return {**sentiment_files, "validation": bad}


def test_a_run_failing_on_bad_data_leaves_no_new_path(tiny_encoder, bad_validation, tmp_path):
    out = tmp_path / "new" / "out"
    result = CliRunner().invoke(app, train_args(tiny_encoder, bad_validation, out))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {bad_validation['validation']} line 5: label 'mystery' was never seen in training (training "
        "labels: neg, pos)"]
    assert not (tmp_path / "new").exists()


def test_a_run_failing_on_bad_data_leaves_an_existing_directory_as_it_was(tiny_encoder, bad_validation, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, train_args(tiny_encoder, bad_validation, out))
    assert result.exit_code == 2
    assert snapshot(out) == {"notes.txt": b"mine"} and sorted(os.listdir(out)) == ["notes.txt"]


def fail_in_the_first_step(monkeypatch) -> None:
    def out_of_memory(self, loss, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Accelerator, "backward", out_of_memory)


def test_a_run_failing_in_its_first_step_leaves_no_new_path(tiny_encoder, sentiment_files, tmp_path, monkeypatch):
    out = tmp_path / "new" / "out"
    fail_in_the_first_step(monkeypatch)
    with pytest.raises(RuntimeError, match="out of memory"):
        fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
                 validation_file=str(sentiment_files["validation"]), output_dir=str(out), epochs=1)
    assert not (tmp_path / "new").exists()


def test_an_overwriting_run_failing_in_its_first_step_keeps_the_earlier_run(
        tiny_encoder, sentiment_files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    settings = {"task": "text-classification", "model": tiny_encoder, "train_file": str(sentiment_files["train"]),
                "validation_file": str(sentiment_files["validation"]), "output_dir": str(out), "max_steps": 2,
                "batch_size": 8}
    fk.train(**settings)
    before = snapshot(out)
    assert "checkpoints/step-2/model.safetensors" in before and "train_log.jsonl" in before
    fail_in_the_first_step(monkeypatch)
    with pytest.raises(RuntimeError, match="out of memory"):
        fk.train(**settings, overwrite=True, seed=7)
    assert snapshot(out) == before
