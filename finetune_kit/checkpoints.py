"""Checkpoints for exact resume: one folder per optimizer step, ``OUTPUT_DIR/checkpoints/step-N``.

A checkpoint is Accelerate's ``save_state`` (model, optimizer, scheduler, gradient scaler, the
RNG states of every process; DeepSpeed and FSDP shards where those are used) plus
``trainer_state.json``: the loop's counters, the position in the data and the settings that
must not change on resume. It is written into a hidden sibling folder, the state file last, and
renamed into place; so a crash during a save leaves the earlier checkpoints as they were, and a
folder without its state file is never taken for a checkpoint.

The state file records the size and sha256 of every other file of the checkpoint, and a
fingerprint of the training and validation data; every file (and folder) is on disk (fsync)
before the rename publishes the checkpoint. A resume checks both: a damaged newest checkpoint
gives way to the newest intact one, and changed data is an error unless ``resume_anyway``.
Checkpoints of format 1 (before checksums) are resumed with a warning that they cannot be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from datasets import Dataset

from .config import REQUIRED, ConfigError, TrainConfig, declared_settings
from .data import INTERNAL_COLUMNS
from .modeling import MANIFEST

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 2  # 2: checksums of the files ("files") and fingerprints of the data (settings "data")
# What the training loop reads back from a state file.
_STATE_KEYS = ("step", "epoch", "batches_done", "running_loss", "running_batches", "state", "settings")
_CHECKPOINT_NAME = re.compile(r"step-(\d+)")
_PARTIAL_PREFIXES = (".saving-", ".replaced-")

# Settings a resumed run may change: where it writes, how it checkpoints, logs and reports, and
# data that is only evaluated after training. Any other difference would not continue the same run.
FREE_ON_RESUME = frozenset({
    "output_dir", "overwrite", "resume", "resume_from", "resume_anyway", "save_steps", "save_total_limit",
    "logging_steps", "test_file", "test_split", "trust_remote_code", "report_plots", "bootstrap_resamples",
    "report_to",
})


# What a checkpoint that does not record a setting was written with, as JSON values (as
# run_settings records them): the setting's default, or the value runs had before it was recorded.
_UNRECORDED = json.loads(json.dumps({
    s.name: s.default if s.unrecorded is REQUIRED else s.unrecorded for s in declared_settings()
    if s.default is not REQUIRED}))


class ResumeError(ConfigError):
    """No checkpoint to resume from, or one that would not continue the same run."""


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step of a complete checkpoint folder, else None."""
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    if match is None or not (path / STATE_FILE).is_file():
        return None
    return int(match.group(1))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest (lowest step) first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(step, path) for path in root.iterdir() if (step := checkpoint_step(path)) is not None]
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def run_settings(config: TrainConfig, num_processes: int) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it, as JSON values."""
    settings = {k: v for k, v in config.to_dict().items() if k not in FREE_ON_RESUME}
    settings["num_processes"] = num_processes
    return json.loads(json.dumps(settings))


def resume_option(config: TrainConfig) -> str:
    """The setting that asked for the resume, for error messages."""
    return "resume_from" if config.resume_from else "resume"


def find_resume_checkpoint(config: TrainConfig, num_processes: int, warn: Callable[[str], None]) -> Path | None:
    """The checkpoint this run continues (None for a fresh run): intact, and checked against the
    run's settings. ``warn`` says which damaged checkpoints were passed over."""
    if config.resume_from:
        checkpoint = Path(config.resume_from)
        if checkpoint_step(checkpoint) is None:
            raise ResumeError(
                f"resume_from: {checkpoint} is not a complete checkpoint (a step-N folder holding {STATE_FILE}, "
                f"as written under OUTPUT_DIR/{CHECKPOINTS_DIR})"
            )
        damage = checkpoint_damage(checkpoint)
        if damage is not None:
            raise ResumeError(f"resume_from: {checkpoint} is damaged: {damage}; resume from another checkpoint "
                              f"of the run (--resume takes the newest intact one)")
    elif config.resume:
        checkpoint = newest_intact_checkpoint(config.output_dir, warn)
    else:
        return None
    saved = read_checkpoint(checkpoint)
    if "files" not in saved:
        warn(f"{checkpoint} was written by an earlier finetune-kit (checkpoint format {saved['format_version']}) "
             f"without checksums or data fingerprints: its files and the data cannot be checked")
    check_settings(checkpoint, saved, run_settings(config, num_processes), resume_option(config))
    _check_best_model(checkpoint, saved, Path(config.output_dir), resume_option(config))
    return checkpoint


def newest_intact_checkpoint(output_dir: str | Path, warn: Callable[[str], None]) -> Path:
    """The newest checkpoint whose files are whole; each newer, damaged one is named in a warning."""
    found = list_checkpoints(output_dir)
    if not found:
        raise ResumeError(
            f"resume: no complete checkpoint in {checkpoints_dir(output_dir)}; start the run without "
            f"--resume (checkpoints are written every --save-steps and after each epoch)"
        )
    damaged = []
    for checkpoint in reversed(found):
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            for path, problem in damaged:
                warn(f"{path} is damaged: {problem}; resuming from {checkpoint} instead")
            return checkpoint
        damaged.append((checkpoint, damage))
    newest, problem = damaged[0]
    others = " (and so is every earlier checkpoint)" if len(found) > 1 else ""
    raise ResumeError(f"resume: {newest} is damaged: {problem}{others}; no intact checkpoint is left to resume "
                      f"from: start the run over with --overwrite")


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint folder (its state file unreadable, a file missing, cut
    short or changed since it was saved), or None when it is whole."""
    try:
        saved = read_checkpoint(checkpoint)
    except OSError as exc:
        return f"{STATE_FILE} cannot be read ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{STATE_FILE} is not valid JSON ({exc})"
    if not isinstance(saved, dict):
        return f"{STATE_FILE} does not hold a checkpoint's state"
    missing = [key for key in ("format_version", *_STATE_KEYS) if key not in saved]
    if missing:
        return f"{STATE_FILE} lacks {', '.join(missing)}"
    files = saved.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) and {"bytes", "sha256"} <= v.keys()
                                              for v in files.values()):
        return f"{STATE_FILE} holds no valid checksums"
    for name, recorded in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != recorded["bytes"]:
            return f"{name} has {size:,} bytes, {recorded['bytes']:,} when it was saved"
        if _sha256(path) != recorded["sha256"]:
            return f"{name} does not match the sha256 recorded when it was saved"
    return None


def file_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``folder`` but its state file, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STATE_FILE)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(ds: Dataset) -> str:
    """sha256 of a split's rows as read (every column but the line numbers): the same rows from a
    file written another way match, a changed label does not."""
    columns = sorted(c for c in ds.column_names if c not in INTERNAL_COLUMNS)
    digest = hashlib.sha256(json.dumps(columns).encode("utf-8"))
    for batch in ds.select_columns(columns).iter(batch_size=1000):
        digest.update(json.dumps([batch[c] for c in columns], ensure_ascii=False, default=str).encode("utf-8"))
    return digest.hexdigest()


def check_data(checkpoint: Path, fingerprints: dict[str, str], sources: dict[str, str], config: TrainConfig,
               warn: Callable[[str], None]) -> None:
    """The training and validation data must be those the checkpoint was written with; with
    ``resume_anyway`` a difference is only a warning."""
    recorded = read_checkpoint(checkpoint)["settings"].get("data")
    if recorded is None:  # format 1: nothing recorded (find_resume_checkpoint has warned)
        return
    for split, fingerprint in fingerprints.items():
        if recorded.get(split) == fingerprint:
            continue
        problem = (f"{resume_option(config)}: the {split} data {sources[split]} changed since {checkpoint} was "
                   f"written (its rows differ)")
        if not config.resume_anyway:
            raise ResumeError(f"{problem}; resume with the same data, or pass --resume-anyway "
                              f"(resume_anyway=true) to continue on the changed data")
        warn(f"{problem}; continuing on the changed data (resume_anyway)")


def check_settings(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any], option: str) -> None:
    """Every setting in ``current`` must be the one the checkpoint was written with. A setting
    newer than the checkpoint (not recorded in it) must be at what the run that wrote the
    checkpoint had: its default, or the value it had before it was recorded (``unrecorded``)."""
    recorded = saved.get("settings", {})
    for key, value in current.items():
        if key not in recorded and key in _UNRECORDED and value == _UNRECORDED[key]:
            continue
        if key not in recorded:
            raise ResumeError(f"{option}: {checkpoint} does not record {key}; it cannot be resumed exactly")
        if recorded[key] != value:
            raise ResumeError(
                f"{option}: {checkpoint} was written with {key}={recorded[key]!r} but this run has "
                f"{key}={value!r}; resume with the settings of the interrupted run"
            )


def _check_best_model(checkpoint: Path, saved: dict[str, Any], output_dir: Path, option: str) -> None:
    """The best weights so far live in the output directory, not in each checkpoint."""
    best_step = saved.get("state", {}).get("best_step")
    if best_step is not None and not (output_dir / MANIFEST).is_file():
        raise ResumeError(
            f"{option}: {checkpoint} continues a run whose best model so far (step {best_step}) is not in "
            f"{output_dir}; resume into the output directory of that run"
        )


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write ``step-<step>`` atomically, then delete all but the ``keep`` newest checkpoints.

    Every process takes part (each saves its own RNG state; sharded models save their shards).
    """
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step}"
    partial = root / f".saving-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process's files are written
    if accelerator.is_main_process:
        state = {"format_version": FORMAT_VERSION, **trainer_state, "files": file_checksums(partial)}
        (partial / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        sync_folder(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _move_into_place(partial, final)
        _fsync(final.parent)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def sync_folder(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves (deepest first), so that the
    rename that publishes a checkpoint publishes files already on disk."""
    for directory, _, names in os.walk(folder, topdown=False):
        for name in names:
            _fsync(Path(directory) / name)
        _fsync(Path(directory))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(partial: Path, final: Path) -> None:
    """Rename ``partial`` to ``final``; an older folder of that name is moved aside first and
    deleted only once the new one is in place."""
    replaced = None
    if final.exists():
        replaced = final.with_name(f".replaced-{final.name}")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(partial, final)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints, and folders left by crashed saves."""
    complete = list_checkpoints(output_dir)
    for path in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(path)
    for path in checkpoints_dir(output_dir).iterdir():
        if path.name.startswith(_PARTIAL_PREFIXES) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def remove_checkpoints(output_dir: str | Path) -> None:
    """Delete the checkpoints of an earlier run (a fresh run with ``overwrite``)."""
    shutil.rmtree(checkpoints_dir(output_dir), ignore_errors=True)
