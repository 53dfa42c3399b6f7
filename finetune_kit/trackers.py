"""Experiment trackers (``report_to``: TensorBoard, MLflow, Trackio, Weights & Biases) through
Accelerate's tracker API.

A run's trackers get its settings as hyper-parameters when training starts, then the training
loss, learning rate and tokens/s at each logging step (``train/...``) and every evaluation's
metrics at its optimizer step (``eval/...`` for the validation split, ``test/...`` for the test
split). Only the main process writes (Accelerate sees to that). Where the logs go:

- tensorboard: event files under OUTPUT_DIR/runs/finetune-kit;
- mlflow: the store MLFLOW_TRACKING_URI names, else a SQLite store in OUTPUT_DIR/mlruns;
- wandb: its project finetune-kit, a run named after the output directory, its files under
  OUTPUT_DIR/wandb unless WANDB_DIR is set; offline with WANDB_MODE=offline;
- trackio: its project finetune-kit in its local store (TRACKIO_DIR), a run named after the
  output directory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from .config import ConfigError, TrainConfig

# The project the trackers file a run under (TensorBoard: the folder under OUTPUT_DIR/runs).
PROJECT = "finetune-kit"
TENSORBOARD_DIR = "runs"
MLFLOW_DIR = "mlruns"
# The modules each tracker needs, with the pip package that provides each.
PACKAGES = {
    "tensorboard": {"tensorboard": "tensorboard"},
    "mlflow": {"mlflow": "mlflow-skinny"},
    "trackio": {"trackio": "trackio"},
    "wandb": {"wandb": "wandb"},
}
# What MLflow's SQLite store needs beside mlflow-skinny (the full mlflow package has them).
MLFLOW_LOCAL_STORE_PACKAGES = {"sqlalchemy": "sqlalchemy", "alembic": "alembic"}


def tracker_names(config: TrainConfig) -> list[str]:
    """The trackers the run reports to, each once (none: an empty list)."""
    names = config.report_to or []
    return [] if names == ["none"] else list(dict.fromkeys(names))


def uses_local_mlflow_store() -> bool:
    """Whether MLflow writes into the output directory: MLFLOW_TRACKING_URI names no other store."""
    return not os.environ.get("MLFLOW_TRACKING_URI")


def required_packages(name: str) -> dict[str, str]:
    """The modules tracker ``name`` needs, with their pip packages."""
    if name == "mlflow" and uses_local_mlflow_store():
        return {**PACKAGES[name], **MLFLOW_LOCAL_STORE_PACKAGES}
    return PACKAGES[name]


def check_trackers_installed(config: TrainConfig) -> None:
    """Every tracker of the run has its packages; else an error naming what to install."""
    for name in tracker_names(config):
        missing = [package for module, package in required_packages(name).items()
                   if importlib.util.find_spec(module) is None]
        if missing:
            packages = " ".join(missing)
            raise ConfigError(f"report_to: {name} needs the Python package(s) {packages}, not installed; "
                              f"pip install {packages}")


def accelerator_settings(config: TrainConfig) -> dict[str, Any]:
    """The Accelerator's tracker settings for the run (none without trackers): which trackers,
    and the output directory, with TensorBoard's logs under OUTPUT_DIR/runs."""
    names = tracker_names(config)
    if not names:
        return {}
    output_dir = Path(config.output_dir).absolute()
    return {"log_with": names, "project_config": ProjectConfiguration(
        project_dir=str(output_dir), logging_dir=str(output_dir / TENSORBOARD_DIR))}


def tracker_value(value: Any) -> bool | int | float | str:
    """A setting's value as every tracker takes a hyper-parameter: None as "none", a list
    comma-separated, anything else that is not a plain scalar as its text."""
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def hyperparameters(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The run's settings as tracker hyper-parameters; task options as ``task_options.NAME``."""
    values: dict[str, Any] = {}
    for name, value in config.to_dict().items():
        if isinstance(value, dict):
            values.update({f"{name}.{key}": tracker_value(item) for key, item in value.items()})
        else:
            values[name] = tracker_value(value)
    return values


def init_kwargs(config: TrainConfig, resumed_step: int) -> dict[str, dict[str, Any]]:
    """Each tracker's own settings: the run's name (the output directory's), where files go,
    and for TensorBoard the first step this run logs, from which it drops what an interrupted or
    overwritten run logged in the same folder."""
    output_dir = Path(config.output_dir).absolute()
    run_name = output_dir.name
    mlflow = {"run_name": run_name}
    if uses_local_mlflow_store():
        mlflow["logging_dir"] = str(output_dir / MLFLOW_DIR / "artifacts")
    wandb = {"name": run_name} if os.environ.get("WANDB_DIR") else {"name": run_name, "dir": str(output_dir)}
    return {"tensorboard": {"purge_step": resumed_step + 1}, "mlflow": mlflow, "wandb": wandb,
            "trackio": {"name": run_name}}


def start_tracking(accelerator: Accelerator, config: TrainConfig, resumed_step: int = 0) -> None:
    """Start the run's trackers (none: nothing) with its settings as hyper-parameters; a resumed
    run continues from ``resumed_step``. Call it inside ``tracking``."""
    names = tracker_names(config)
    if not names:
        return
    if "mlflow" in names and uses_local_mlflow_store() and accelerator.is_main_process:
        use_local_mlflow_store(Path(config.output_dir))
    accelerator.init_trackers(PROJECT, config=hyperparameters(config), init_kwargs=init_kwargs(config, resumed_step))


def log_scalars(accelerator: Accelerator, prefix: str, values: dict[str, Any], step: int) -> None:
    """Log the numbers among ``values`` as ``PREFIX/NAME`` at optimizer step ``step`` (no tracker:
    nothing)."""
    scalars = {f"{prefix}/{name}": value for name, value in values.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if scalars and accelerator.trackers:
        accelerator.log(scalars, step=step)


def log_evaluation(accelerator: Accelerator, split: str, metrics: dict[str, Any], step: int) -> None:
    """An evaluation's metrics at optimizer step ``step``: the validation split's as ``eval/NAME``,
    another split's as ``SPLIT/NAME`` (e.g. ``test/accuracy``)."""
    log_scalars(accelerator, "eval" if split == "validation" else split, metrics, step)


def end_tracking(accelerator: Accelerator) -> None:
    """Close the run's trackers, flushing what they hold; each is closed even if another fails.

    This is what ``accelerator.end_training()`` does, less its last act: it would also destroy the
    process group, which a later run in this process still uses (``new_accelerator`` keeps it)."""
    trackers, accelerator.trackers = accelerator.trackers, []
    with ExitStack() as closing:
        for tracker in trackers:
            closing.callback(tracker.finish)


def use_local_mlflow_store(output_dir: Path) -> None:
    """Make MLflow write into a SQLite store in OUTPUT_DIR/mlruns."""
    import mlflow

    store = output_dir.absolute() / MLFLOW_DIR
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")


def forget_local_mlflow_store() -> None:
    """Put MLflow's store back to unset (MLflow also sets MLFLOW_TRACKING_URI to the store it is
    given), so that a later run in this process does not write into this run's store."""
    import mlflow

    mlflow.set_tracking_uri(None)


@contextmanager
def tracking(accelerator: Accelerator, config: TrainConfig) -> Iterator[None]:
    """The block in which the run's trackers may be started (``start_tracking``): however it
    ends, an error included, the trackers are closed and their files flushed."""
    local_mlflow = "mlflow" in tracker_names(config) and uses_local_mlflow_store()
    try:
        yield
    finally:
        end_tracking(accelerator)
        if local_mlflow:
            forget_local_mlflow_store()
