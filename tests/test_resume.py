"""Checkpoints and exact resume: a run killed mid-epoch and resumed ends where the uninterrupted
run ends; saves are atomic; old checkpoints are pruned; resuming the wrong run is an error."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.checkpoints import (
    STATE_FILE,
    ResumeError,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from finetune_kit.cli import app
from finetune_kit.config import ConfigError
from tests.conftest import NEGATIVE, POSITIVE, one_torch_thread, write_csv

TIMING_FIELDS = {"elapsed_s", "tokens_per_s", "train_runtime_s"}
ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]


one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)  # bit-identical resumes


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"tensors differ: {different[:5]}"


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


# --- the acceptance test: SIGKILL mid-epoch, --resume, same weights, metrics and log -------------

def cli_command(tiny_encoder: str, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """Two epochs of 97 optimizer steps (193 batches of 2, two per step, the last step of each
    epoch one batch), dropout on, warm-up and decay; every 5 steps an evaluation, then a checkpoint."""
    return [sys.executable, "-m", "finetune_kit.cli", "train", "logging_steps=3",
            "--task", "text-classification", "--model", tiny_encoder, "--train", str(files["train"]),
            "--validation", str(files["validation"]), "--test", str(files["test"]), "--output", str(out),
            "--epochs", "2", "--batch-size", "2", "--gradient-accumulation-steps", "2", "--learning-rate", "1e-3",
            "--warmup-ratio", "0.1", "--weight-decay", "0.01", "--eval-steps", "5", "--save-steps", "5", *extra]


def kill_at_first_checkpoint(command: list[str], out: Path, env: dict, stderr: Path) -> None:
    """Start the run, wait for its first checkpoint, and SIGKILL it."""
    with stderr.open("w") as err:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 240
        try:
            while latest_checkpoint(out) is None:
                assert process.poll() is None, f"the run ended before its first checkpoint:\n{stderr.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.005)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_run_killed_mid_epoch_resumes_to_the_same_weights_metrics_and_log(tiny_encoder, tmp_path):
    files = {"train": write_csv(tmp_path / "train.csv", ROWS * 24 + ROWS[:2]),
             "validation": write_csv(tmp_path / "dev.csv", ROWS),
             "test": write_csv(tmp_path / "test.csv", ROWS[::-1])}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    reference_out, resumed_out = tmp_path / "uninterrupted", tmp_path / "resumed"
    # the uninterrupted run goes alongside the killed one
    reference = subprocess.Popen(cli_command(tiny_encoder, files, reference_out), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        kill_at_first_checkpoint(cli_command(tiny_encoder, files, resumed_out), resumed_out, env,
                                 tmp_path / "killed.err")
        assert not (resumed_out / "metrics.json").exists()
        checkpoint = latest_checkpoint(resumed_out)
        saved = read_checkpoint(checkpoint)
        assert saved["batches_done"] > 0, f"{checkpoint.name} is at an epoch's end, not in the middle of one"
        assert saved["batches_done"] % 2 == 0  # an optimizer-step boundary under accumulation
        assert saved["state"]["best_step"] is not None  # the best metric so far must carry over
        killed_log = (resumed_out / "train_log.jsonl").read_text().splitlines()
        # what a run killed a little later leaves: records past the checkpoint, a line cut short
        with (resumed_out / "train_log.jsonl").open("a") as log:
            log.write(json.dumps({"event": "train", "step": saved["step"] + 1, "loss": 0.5}) + '\n{"event": "ev')

        resumed = subprocess.run(cli_command(tiny_encoder, files, resumed_out, "--resume"), env=env,
                                 capture_output=True, text=True, timeout=240, check=False)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"Resuming from {checkpoint}" in resumed.stderr
    finally:
        _, reference_err = reference.communicate(timeout=240)
    assert reference.returncode == 0, reference_err[-3000:]

    assert_same_weights(resumed_out, reference_out)
    metrics = json.loads((resumed_out / "metrics.json").read_text())
    assert without_timing(metrics) == without_timing(json.loads((reference_out / "metrics.json").read_text()))
    assert set(metrics) == {"validation", "test"}

    # the log keeps the killed run's records up to the checkpoint as they were (timings included),
    # and continues without gaps or duplicates, as the uninterrupted run's log
    final_log = (resumed_out / "train_log.jsonl").read_text().splitlines()
    kept = [line for line in killed_log if complete_record(line) and json.loads(line)["step"] <= saved["step"]]
    assert kept and final_log[: len(kept)] == kept
    assert without_timing(log_records(resumed_out)) == without_timing(log_records(reference_out))
    # and the last checkpoints hold the same loop state: counters, best metric, evaluation history
    last_resumed, last_reference = latest_checkpoint(resumed_out), latest_checkpoint(reference_out)
    assert last_resumed.name == last_reference.name == "step-194"
    assert without_timing(read_checkpoint(last_resumed)) == without_timing(read_checkpoint(last_reference))


def complete_record(line: str) -> bool:
    """Whether a log line was written whole (a killed run may leave half a line)."""
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


# --- in-process runs: atomic saves, pruning, errors --------------------------------------------

def small_files(tmp_path: Path) -> dict[str, Path]:
    return {"train": write_csv(tmp_path / "train.csv", ROWS * 2), "validation": write_csv(tmp_path / "dev.csv", ROWS)}


def train_small(tiny_encoder: str, files: dict[str, Path], out: Path, **settings):
    """Two epochs of 8 steps; checkpoints at steps 3, 6, 8 (epoch end), 9, 12, 15 and 16."""
    defaults = {"task": "text-classification", "model": tiny_encoder, "train_file": str(files["train"]),
                "validation_file": str(files["validation"]), "output_dir": str(out), "batch_size": 4, "epochs": 2,
                "learning_rate": 1e-3, "save_steps": 3, "eval_steps": 5}
    return fk.train(**{**defaults, **settings})


@pytest.fixture(scope="module")
def finished_run(tiny_encoder, tmp_path_factory):
    """An uninterrupted run that keeps its two newest checkpoints."""
    directory = tmp_path_factory.mktemp("finished")
    files = small_files(directory)
    result = train_small(tiny_encoder, files, directory / "out", save_total_limit=2)
    return files, directory / "out", result


def test_only_the_newest_checkpoints_are_kept(finished_run):
    _, out, result = finished_run
    assert result.global_step == 16
    assert [p.name for p in list_checkpoints(out)] == ["step-15", "step-16"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-15", "step-16"]
    assert read_checkpoint(out / "checkpoints" / "step-15")["batches_done"] == 7


def test_a_limit_of_zero_writes_no_checkpoints(tiny_encoder, tmp_path):
    train_small(tiny_encoder, small_files(tmp_path), tmp_path / "out", save_total_limit=0)
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tiny_encoder, finished_run, tmp_path, monkeypatch):
    files, reference_out, _ = finished_run
    out = tmp_path / "out"
    real_save_state = Accelerator.save_state
    saves = []

    def save_then_crash(self, output_dir=None, **kwargs):
        saves.append(output_dir)
        real_save_state(self, output_dir, **kwargs)
        if len(saves) == 2:
            raise OSError("No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", save_then_crash)
    with pytest.raises(OSError, match="No space left"):
        train_small(tiny_encoder, files, out, save_total_limit=2)
    monkeypatch.undo()

    partial = Path(saves[-1])
    assert (partial / "model.safetensors").exists() and not (partial / STATE_FILE).exists()
    assert [p.name for p in list_checkpoints(out)] == ["step-3"]
    assert latest_checkpoint(out) == out / "checkpoints" / "step-3"

    train_small(tiny_encoder, files, out, save_total_limit=2, resume=True)
    assert_same_weights(out, reference_out)
    assert not partial.exists()  # a crashed save's folder is cleared by a later save


def test_resume_without_a_checkpoint_is_a_one_line_error(tiny_encoder, tmp_path):
    files, out = small_files(tmp_path), tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--task", "text-classification", "--model", tiny_encoder,
                                      "--train", str(files["train"]), "--output", str(out), "--resume"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        (f"error: resume: no complete checkpoint in {out / 'checkpoints'}; start the run without --resume "
         "(checkpoints are written every --save-steps and after each epoch)")]
    assert not out.exists()


def test_resume_from_a_folder_that_is_no_checkpoint_is_an_error(tiny_encoder, tmp_path):
    files = small_files(tmp_path)
    half_written = tmp_path / "out" / "checkpoints" / "step-4"
    half_written.mkdir(parents=True)
    (half_written / "model.safetensors").write_bytes(b"")
    with pytest.raises(ResumeError, match=f"resume_from: {half_written} is not a complete checkpoint"):
        train_small(tiny_encoder, files, tmp_path / "out", resume_from=str(half_written))
    with pytest.raises(ResumeError, match="resume: no complete checkpoint"):
        train_small(tiny_encoder, files, tmp_path / "out", resume=True)


@pytest.mark.parametrize(("setting", "value"), [
    ("batch_size", 8), ("gradient_accumulation_steps", 2), ("seed", 7), ("epochs", 3.0), ("max_steps", 20),
    ("learning_rate", 5e-4), ("task", "pair-classification"), ("dropout_masks", "torch"),
])
def test_resume_with_other_settings_is_an_error(tiny_encoder, finished_run, setting, value):
    files, out, _ = finished_run
    checkpoint = out / "checkpoints" / "step-16"
    with pytest.raises(ResumeError, match=rf"resume: {checkpoint} was written with {setting}=.* but this run has "
                                          rf"{setting}={value!r}"):
        train_small(tiny_encoder, files, out, resume=True, save_total_limit=2, **{setting: value})
    assert [p.name for p in list_checkpoints(out)] == ["step-15", "step-16"]


def test_resume_with_other_training_data_is_an_error(tiny_encoder, tmp_path):
    files, out = small_files(tmp_path), tmp_path / "out"
    train_small(tiny_encoder, files, out, max_steps=2, validation_file=None)
    write_csv(files["train"], ROWS * 3)
    with pytest.raises(ResumeError, match=f"resume: the train data {files['train']} changed since "):
        train_small(tiny_encoder, files, out, max_steps=2, validation_file=None, resume=True)
    # resume_anyway accepts other rows, but not another number of batches: the data position would be lost
    with pytest.raises(ResumeError, match="train_features=32 but this run has train_features=48"):
        train_small(tiny_encoder, files, out, max_steps=2, validation_file=None, resume=True, resume_anyway=True)


def test_resume_may_change_where_and_how_often_it_checkpoints(tiny_encoder, finished_run, tmp_path):
    """A finished run's last checkpoint resumes to its final evaluation (as after a crash in it)."""
    files, out, result = finished_run
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    (moved / "metrics.json").unlink()
    resumed = train_small(tiny_encoder, files, moved, resume=True, save_steps=2, save_total_limit=1, logging_steps=1)
    assert resumed.global_step == 16 and resumed.best_metric == result.best_metric
    assert resumed.metrics == result.metrics
    assert [p.name for p in list_checkpoints(moved)] == ["step-15", "step-16"]  # nothing left to train or save
    assert [r["event"] for r in log_records(moved)].count("train_end") == 1


def test_resume_where_the_best_model_so_far_is_missing_is_an_error(tiny_encoder, finished_run, tmp_path):
    files, out, _ = finished_run
    with pytest.raises(ResumeError, match=r"best model so far \(step \d+\) is not in .*elsewhere"):
        train_small(tiny_encoder, files, tmp_path / "elsewhere", resume_from=str(out / "checkpoints" / "step-16"),
                    save_total_limit=2)


def test_a_fresh_run_keeps_away_from_an_earlier_runs_checkpoints(tiny_encoder, tmp_path):
    files, out = small_files(tmp_path), tmp_path / "out"
    train_small(tiny_encoder, files, out, max_steps=3, eval_steps=None, validation_file=None)
    (out / "finetune_kit.json").unlink()  # as if killed before its first best model
    with pytest.raises(fk.api.OutputDirError, match="holds checkpoints of an earlier run; pass --resume"):
        train_small(tiny_encoder, files, out, max_steps=3)
    train_small(tiny_encoder, files, out, max_steps=2, overwrite=True)
    assert [p.name for p in list_checkpoints(out)] == ["step-2"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"save_steps": 0}, "save_steps: 0 is not allowed"),
    ({"save_total_limit": -1}, "save_total_limit: -1 is not allowed"),
    ({"resume": True, "resume_from": "x"}, "resume_from: give either resume"),
])
def test_checkpoint_settings_are_validated(settings, message):
    with pytest.raises(ConfigError, match=message):
        fk.config.from_dict({"task": "t", "model": "m", "output_dir": "o", "train_file": "f", **settings})


def test_train_help_lists_the_checkpoint_options():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    for option in ("--save-steps", "--save-total-limit", "--resume", "--resume-from"):
        assert option in result.output, option


# --- damaged checkpoints and changed data --------------------------------------------------------

def resumable_copy(finished_run, tmp_path: Path) -> Path:
    """A copy of the finished run as a crash during its final evaluation leaves it."""
    _, out, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "metrics.json").unlink()
    return copy


DAMAGEABLE = ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", STATE_FILE]


def damage(checkpoint: Path, name: str) -> tuple[int, int]:
    """Cut a file of the checkpoint short (the scheduler's to nothing): (bytes before, after)."""
    path = checkpoint / name
    data = path.read_bytes()
    kept = data[:0] if name == "scheduler.bin" else data[: len(data) // 2]
    path.write_bytes(kept)
    return len(data), len(kept)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def cli_train_small(tiny_encoder: str, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """The command line of ``train_small(..., save_total_limit=2)``."""
    return ["train", "--task", "text-classification", "--model", tiny_encoder, "--train", str(files["train"]),
            "--validation", str(files["validation"]), "--output", str(out), "--batch-size", "4", "--epochs", "2",
            "--learning-rate", "1e-3", "--save-steps", "3", "--eval-steps", "5", "--save-total-limit", "2", *extra]


def test_checkpoints_record_the_size_and_checksum_of_every_file(finished_run):
    import hashlib

    _, out, _ = finished_run
    checkpoint = out / "checkpoints" / "step-16"
    saved = read_checkpoint(checkpoint)
    assert saved["format_version"] == 2
    on_disk = sorted(p.name for p in checkpoint.iterdir() if p.name != STATE_FILE)
    assert sorted(saved["files"]) == on_disk and set(DAMAGEABLE) - {STATE_FILE} <= set(on_disk)
    for name, recorded in saved["files"].items():
        data = (checkpoint / name).read_bytes()
        assert recorded == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert set(saved["settings"]["data"]) == {"train", "validation"}


@pytest.mark.parametrize("name", DAMAGEABLE)
def test_a_damaged_newest_checkpoint_gives_way_to_the_one_before(tiny_encoder, finished_run, tmp_path, capsys, name):
    files, reference_out, result = finished_run
    out = resumable_copy(finished_run, tmp_path)
    damaged, older = out / "checkpoints" / "step-16", out / "checkpoints" / "step-15"
    damage(damaged, name)
    capsys.readouterr()
    resumed = train_small(tiny_encoder, files, out, resume=True, save_total_limit=2)
    printed = capsys.readouterr().err.splitlines()
    warnings = [line for line in printed if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {damaged} is damaged: {name} ")
    assert warnings[0].endswith(f"; resuming from {older} instead")
    assert f"Resuming from {older}" in printed
    # step 16 was trained again from step 15, as in the uninterrupted run
    assert resumed.global_step == 16 and resumed.metrics == result.metrics
    assert_same_weights(damaged, reference_out / "checkpoints" / "step-16")
    assert without_timing(read_checkpoint(damaged)) == without_timing(
        read_checkpoint(reference_out / "checkpoints" / "step-16"))


@pytest.mark.parametrize("name", DAMAGEABLE)
def test_a_damaged_only_checkpoint_is_a_one_line_error(tiny_encoder, finished_run, tmp_path, name):
    files, _, _ = finished_run
    out = resumable_copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-15")
    checkpoint = out / "checkpoints" / "step-16"
    size, cut = damage(checkpoint, name)
    before = snapshot(out)
    result = CliRunner().invoke(app, cli_train_small(tiny_encoder, files, out, "--resume"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    if name == STATE_FILE:
        assert lines[0].startswith(f"error: resume: {checkpoint} is damaged: {STATE_FILE} is not valid JSON (")
    else:
        assert lines[0].startswith(
            f"error: resume: {checkpoint} is damaged: {name} has {cut:,} bytes, {size:,} when it was saved; ")
    assert lines[0].endswith("; no intact checkpoint is left to resume from: start the run over with --overwrite")
    assert snapshot(out) == before


def test_a_file_changed_in_place_is_found_by_its_checksum(tiny_encoder, finished_run, tmp_path):
    files, _, _ = finished_run
    out = resumable_copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-15")
    weights = out / "checkpoints" / "step-16" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in a weight: same size, another sha256
    weights.write_bytes(bytes(data))
    with pytest.raises(ResumeError, match=r"model.safetensors does not match the sha256 recorded when it was saved"):
        train_small(tiny_encoder, files, out, resume=True, save_total_limit=2)


def test_resume_from_a_damaged_checkpoint_is_a_one_line_error(tiny_encoder, finished_run, tmp_path):
    files, _, _ = finished_run
    out = resumable_copy(finished_run, tmp_path)
    checkpoint = out / "checkpoints" / "step-15"
    size, cut = damage(checkpoint, "optimizer.bin")
    before = snapshot(out)
    result = CliRunner().invoke(app, cli_train_small(tiny_encoder, files, out, "--resume-from", str(checkpoint)))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: resume_from: {checkpoint} is damaged: optimizer.bin has {cut:,} bytes, {size:,} when it was saved; "
        "resume from another checkpoint of the run (--resume takes the newest intact one)"]
    assert snapshot(out) == before


def test_a_checkpoint_without_checksums_resumes_with_a_warning(tiny_encoder, finished_run, tmp_path, capsys):
    """Checkpoints written before checksums (format 1) are resumed, saying they cannot be checked."""
    files, reference_out, _ = finished_run
    out = resumable_copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-16")
    checkpoint = out / "checkpoints" / "step-15"
    saved = read_checkpoint(checkpoint)
    del saved["files"], saved["settings"]["data"], saved["settings"]["greater_is_better"]  # newer than format 1
    (checkpoint / STATE_FILE).write_text(json.dumps({**saved, "format_version": 1}))
    capsys.readouterr()
    train_small(tiny_encoder, files, out, resume=True, save_total_limit=2)
    assert (f"warning: {checkpoint} was written by an earlier finetune-kit (checkpoint format 1) without checksums "
            "or data fingerprints: its files and the data cannot be checked") in capsys.readouterr().err.splitlines()
    assert_same_weights(out / "checkpoints" / "step-16", reference_out / "checkpoints" / "step-16")


def test_a_setting_newer_than_the_checkpoint_must_be_at_its_default(tmp_path):
    """A checkpoint written before a setting existed was written with that setting's default."""
    from finetune_kit.checkpoints import ResumeError, check_settings

    saved = {"settings": {"seed": 42}}
    check_settings(tmp_path, saved, {"seed": 42, "greater_is_better": None}, "resume")
    with pytest.raises(ResumeError, match="does not record greater_is_better; it cannot be resumed exactly"):
        check_settings(tmp_path, saved, {"seed": 42, "greater_is_better": False}, "resume")
    with pytest.raises(ResumeError, match="does not record num_processes"):  # not a setting with a default
        check_settings(tmp_path, saved, {"seed": 42, "num_processes": 1}, "resume")


def test_a_checkpoint_from_before_dropout_masks_was_recorded_had_torch_masks(tmp_path):
    """dropout_masks' default is fast, but checkpoints written before it was recorded trained
    with torch's masks: they resume exactly with torch only."""
    from finetune_kit.checkpoints import ResumeError, check_settings
    from finetune_kit.config import TrainConfig

    assert TrainConfig(task="text-classification", model="m", train_file="t.csv", output_dir="o").dropout_masks == "fast"
    saved = {"settings": {"seed": 42}}
    check_settings(tmp_path, saved, {"seed": 42, "dropout_masks": "torch"}, "resume")
    with pytest.raises(ResumeError, match="does not record dropout_masks; it cannot be resumed exactly"):
        check_settings(tmp_path, saved, {"seed": 42, "dropout_masks": "fast"}, "resume")


def flipped(rows: list[dict]) -> list[dict]:
    return [{**row, "label": "neg" if row["label"] == "pos" else "pos"} for row in rows]


@pytest.fixture()
def interrupted_run(tiny_encoder, tmp_path):
    """Files (train, validation, test) and a run of 4 steps whose last checkpoint is step 3."""
    files = {**small_files(tmp_path), "test": write_csv(tmp_path / "test.csv", ROWS)}
    out = tmp_path / "out"
    train_small(tiny_encoder, files, out, test_file=str(files["test"]), max_steps=4, save_total_limit=2)
    shutil.rmtree(out / "checkpoints" / "step-4")
    (out / "metrics.json").unlink()
    return files, out


@pytest.mark.parametrize(("split", "rows"), [("train", ROWS * 2), ("validation", ROWS)])
def test_resume_with_changed_data_under_the_same_path_is_an_error(tiny_encoder, interrupted_run, split, rows):
    files, out = interrupted_run
    write_csv(files[split], flipped(rows))
    before = snapshot(out)
    args = cli_train_small(tiny_encoder, files, out, "--test", str(files["test"]), "--max-steps", "4", "--resume")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: resume: the {split} data {files[split]} changed since {out / 'checkpoints' / 'step-3'} was "
        f"written (its rows differ); resume with the same data, or pass --resume-anyway (resume_anyway=true) to "
        f"continue on the changed data"]
    assert snapshot(out) == before

    result = CliRunner().invoke(app, [*args, "--resume-anyway"])
    assert result.exit_code == 0, result.output
    assert (f"warning: resume: the {split} data {files[split]} changed since {out / 'checkpoints' / 'step-3'} was "
            "written (its rows differ); continuing on the changed data (resume_anyway)") in result.output.splitlines()


def test_resume_with_the_same_rows_written_anew_and_another_test_file(tiny_encoder, interrupted_run, capsys):
    """The fingerprint is of the rows, not the bytes; the test split may change on resume."""
    import csv

    files, out = interrupted_run
    with files["train"].open("w", newline="", encoding="utf-8") as handle:  # every field quoted, CRLF
        writer = csv.DictWriter(handle, fieldnames=["text", "label"], quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(ROWS * 2)
    write_csv(files["test"], flipped(ROWS))
    capsys.readouterr()
    resumed = train_small(tiny_encoder, files, out, test_file=str(files["test"]), max_steps=4, save_total_limit=2,
                          resume=True)
    assert resumed.global_step == 4
    assert "warning:" not in capsys.readouterr().err


def test_a_resumed_run_failing_in_its_first_step_leaves_the_directory_as_it_was(
        tiny_encoder, finished_run, tmp_path, monkeypatch):
    """Until the first step is done nothing is written: the log keeps the records past the checkpoint."""
    files, _, _ = finished_run
    out = resumable_copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-16")
    before = snapshot(out)
    assert '"event": "train_end"' in before["train_log.jsonl"].decode()

    def out_of_memory(self, loss, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Accelerator, "backward", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_small(tiny_encoder, files, out, resume=True, save_total_limit=2)
    assert snapshot(out) == before
