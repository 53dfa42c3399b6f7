"""Checkpoints for exact resume: one folder per optimizer step, ``OUTPUT_DIR/checkpoints/step-N``.

A checkpoint is Accelerate's ``save_state`` (model, optimizer, scheduler, gradient scaler, the
RNG states of every process; DeepSpeed and FSDP shards where those are used) plus
``trainer_state.json``: the loop's counters, the position in the data and the settings that
must not change on resume. It is written into a hidden sibling folder, the state file last, and
renamed into place; so a crash during a save leaves the earlier checkpoints as they were, and a
folder without its state file is never taken for a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .config import ConfigError, TrainConfig
from .modeling import MANIFEST, atomic_write_text

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1
_CHECKPOINT_NAME = re.compile(r"step-(\d+)")
_PARTIAL_PREFIXES = (".saving-", ".replaced-")

# Settings a resumed run may change: where it writes, how it checkpoints, logs and reports, and
# data that is only evaluated after training. Any other difference would not continue the same run.
FREE_ON_RESUME = frozenset({
    "output_dir", "overwrite", "resume", "resume_from", "save_steps", "save_total_limit", "logging_steps",
    "test_file", "test_split", "trust_remote_code", "report_plots", "bootstrap_resamples",
})


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


def find_resume_checkpoint(config: TrainConfig, num_processes: int) -> Path | None:
    """The checkpoint this run continues (None for a fresh run), checked against its settings."""
    if config.resume_from:
        checkpoint = Path(config.resume_from)
        if checkpoint_step(checkpoint) is None:
            raise ResumeError(
                f"resume_from: {checkpoint} is not a complete checkpoint (a step-N folder holding {STATE_FILE}, "
                f"as written under OUTPUT_DIR/{CHECKPOINTS_DIR})"
            )
    elif config.resume:
        checkpoint = latest_checkpoint(config.output_dir)
        if checkpoint is None:
            raise ResumeError(
                f"resume: no complete checkpoint in {checkpoints_dir(config.output_dir)}; start the run without "
                f"--resume (checkpoints are written every --save-steps and after each epoch)"
            )
    else:
        return None
    saved = read_checkpoint(checkpoint)
    check_settings(checkpoint, saved, run_settings(config, num_processes), resume_option(config))
    _check_best_model(checkpoint, saved, Path(config.output_dir), resume_option(config))
    return checkpoint


def check_settings(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any], option: str) -> None:
    """Every setting in ``current`` must be the one the checkpoint was written with."""
    recorded = saved.get("settings", {})
    for key, value in current.items():
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
    if accelerator.is_main_process:
        atomic_write_text(partial / STATE_FILE,
                          json.dumps({"format_version": FORMAT_VERSION, **trainer_state}, indent=1) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _move_into_place(partial, final)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


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
