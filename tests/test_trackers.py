"""Experiment trackers (report_to), read back with each tracker's own reader: TensorBoard event
files, an MLflow store, an offline Weights & Biases run. Names are checked, a missing package is
an error before training, a failing run still closes its trackers, a resumed run logs on at the
right steps."""

import json
import os
import sys
from pathlib import Path

import pytest

import finetune_kit as fk
from finetune_kit.config import ConfigError, load_config
from finetune_kit.trackers import check_trackers_installed, hyperparameters
from finetune_kit.train_options import given_settings, train_option_names
from tests.conftest import NEGATIVE, POSITIVE, write_csv

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
# 32 training rows in batches of 8: 4 optimizer steps an epoch, 8 in all.
STEPS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tracker-data")
    return {"train": write_csv(folder / "train.csv", ROWS * 2), "validation": write_csv(folder / "dev.csv", ROWS),
            "test": write_csv(folder / "test.csv", ROWS)}


def run(tiny_encoder: str, data: dict[str, Path], out: Path, report_to: list[str], **settings) -> fk.TrainResult:
    """Two epochs (8 steps): the loss logged every 2 steps, an evaluation every 3 steps and at each
    epoch's end (steps 3, 4, 6, 8), the test split scored at the end."""
    settings = {"train_file": str(data["train"]), "validation_file": str(data["validation"]),
                "test_file": str(data["test"]), "epochs": 2, "batch_size": 8, "logging_steps": 2, "eval_steps": 3,
                "report_plots": False, "bootstrap_resamples": 0, **settings}
    return fk.train(task="text-classification", model=tiny_encoder, output_dir=str(out), report_to=report_to,
                    **settings)


def log_records(out: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def mlflow_client(out: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{out.absolute() / 'mlruns' / 'mlflow.db'}")


def mlflow_runs(out: Path) -> list:
    client = mlflow_client(out)
    [experiment] = [e for e in client.search_experiments() if e.name == "finetune-kit"]
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def tensorboard_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "runs" / "finetune-kit"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_series(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """The same steps, with the same values (a tracker may keep 32-bit floats)."""
    assert [step for step, _ in actual] == [step for step, _ in expected]
    assert [value for _, value in actual] == pytest.approx([value for _, value in expected], rel=1e-5)


# --- the setting -----------------------------------------------------------------------------------

def test_report_to_is_a_list_of_tracker_names_given_comma_separated():
    assert "--report-to" in train_option_names()
    assert given_settings({"report_to": "tensorboard,mlflow"}) == {"report_to": ["tensorboard", "mlflow"]}
    base = {"task": "text-classification", "model": "m", "output_dir": "o", "train_file": "t.csv"}
    assert load_config(None, ["report_to=wandb, trackio"], **base).report_to == ["wandb", "trackio"]
    assert load_config(None, [], **base).report_to is None
    assert load_config(None, ["report_to=none"], **base).report_to == ["none"]


@pytest.mark.parametrize(("value", "message"), [
    ("tensorbord", "report_to: 'tensorbord' is not a tracker; choose from tensorboard, mlflow, trackio, wandb"),
    ("none,wandb", "report_to: none,wandb is not allowed; none stands alone"),
    ([], "report_to: [] is not allowed"),
])
def test_a_bad_report_to_is_a_one_line_error_naming_the_setting(value, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [], task="text-classification", model="m", output_dir="o", train_file="t.csv",
                    report_to=value.split(",") if isinstance(value, str) else value)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_hyperparameters_are_plain_values_every_tracker_takes():
    config = load_config(None, ["lora_target_modules=query,value", "task_options.crf=true"],
                         task="token-classification", model="m", output_dir="o", train_file="t.conll")
    values = hyperparameters(config)
    assert values["lora_target_modules"] == "query,value"
    assert values["max_steps"] == "none"
    assert values["task_options.crf"] is True
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())


@pytest.mark.parametrize(("tracker", "hidden", "package"), [
    ("wandb", "wandb", "wandb"), ("trackio", "trackio", "trackio"), ("tensorboard", "tensorboard", "tensorboard"),
    ("mlflow", "mlflow", "mlflow-skinny"), ("mlflow", "alembic", "alembic"),
])
def test_a_tracker_whose_package_is_missing_fails_before_training(tiny_encoder, data, tmp_path, monkeypatch,
                                                                  tracker, hidden, package):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed: importlib finds no such module
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=rf"^report_to: {tracker} needs .*{package}.*; pip install .*{package}"):
        run(tiny_encoder, data, out, [tracker])
    assert not out.exists()


def test_mlflow_with_its_own_store_does_not_need_the_local_store_packages(monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setitem(sys.modules, "alembic", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    check_trackers_installed(load_config(None, [], task="text-classification", model="m", output_dir="o",
                                         train_file="t.csv", report_to=["mlflow"]))


# --- TensorBoard and MLflow, from one run -------------------------------------------------------------

@pytest.fixture(scope="module")
def tracked_run(tiny_encoder, data, tmp_path_factory) -> Path:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("alembic")
    out = tmp_path_factory.mktemp("tracked") / "run"
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run(tiny_encoder, data, out, ["tensorboard", "mlflow"])
        assert "MLFLOW_TRACKING_URI" not in os.environ  # the run's store is not left to later runs
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return out


def test_tensorboard_has_the_training_figures_at_each_logging_step(tracked_run):
    scalars = tensorboard_scalars(tracked_run)
    logged = log_records(tracked_run, "train")
    assert [r["step"] for r in logged] == [2, 4, 6, 8]
    for name in ("loss", "learning_rate", "tokens_per_s"):
        assert [step for step, _ in scalars[f"train/{name}"]] == [2, 4, 6, 8]
        assert [value for _, value in scalars[f"train/{name}"]] == pytest.approx([r[name] for r in logged], rel=1e-5)
    assert [value for _, value in scalars["train/epoch"]] == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_tensorboard_has_every_evaluation_metric_at_its_step(tracked_run):
    scalars = tensorboard_scalars(tracked_run)
    evaluations = log_records(tracked_run, "evaluate")
    assert [r["step"] for r in evaluations] == [3, 4, 6, 8]
    for metric in ("accuracy", "macro_f1", "loss"):
        assert_series(scalars[f"eval/{metric}"], [(r["step"], r["metrics"][metric]) for r in evaluations])
    test = json.loads((tracked_run / "metrics.json").read_text())["test"]
    assert_series(scalars["test/accuracy"], [(STEPS, test["accuracy"])])


def test_tensorboard_has_the_run_settings_as_hparams(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    [folder] = {p.parent for p in (tracked_run / "runs" / "finetune-kit").glob("*/events.out.tfevents.*")}
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["task"].string_value == "text-classification"
    assert hparams["batch_size"].number_value == 8
    assert hparams["learning_rate"].number_value == pytest.approx(5e-5)
    assert hparams["report_to"].string_value == "tensorboard,mlflow"
    assert hparams["max_steps"].string_value == "none"


def test_mlflow_has_the_metrics_at_their_steps_and_the_settings_as_params(tracked_run):
    [mlflow_run] = mlflow_runs(tracked_run)
    assert mlflow_run.info.run_name == "run"  # the output directory's name
    assert mlflow_run.info.status == "FINISHED"
    client = mlflow_client(tracked_run)
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(mlflow_run.info.run_id, key),
                                                        key=lambda m: m.step)]
               for key in ("train/loss", "eval/accuracy", "test/accuracy")}
    logged = log_records(tracked_run, "train")
    assert_series(history["train/loss"], [(r["step"], r["loss"]) for r in logged])
    evaluations = log_records(tracked_run, "evaluate")
    assert_series(history["eval/accuracy"], [(r["step"], r["metrics"]["accuracy"]) for r in evaluations])
    assert [step for step, _ in history["test/accuracy"]] == [STEPS]
    params = mlflow_run.data.params
    assert params["epochs"] == "2" and params["batch_size"] == "8" and params["report_to"] == "tensorboard,mlflow"


# --- errors and resuming -------------------------------------------------------------------------------

def test_a_run_that_fails_mid_training_still_closes_its_trackers(tiny_encoder, data, tmp_path, monkeypatch):
    """The first evaluation (step 3) fails: the metric to pick the best checkpoint is not there."""
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("alembic")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "failed"
    with pytest.raises(ConfigError, match="metric_for_best"):
        run(tiny_encoder, data, out, ["tensorboard", "mlflow"], metric_for_best="no_such_metric", logging_steps=1)
    assert [step for step, _ in tensorboard_scalars(out)["train/loss"]] == [1, 2, 3]
    [mlflow_run] = mlflow_runs(out)
    assert mlflow_run.info.status == "FINISHED"  # ended, not left running
    assert mlflow.active_run() is None
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_resumed_run_logs_on_from_its_checkpoint_step(tiny_encoder, data, tmp_path, monkeypatch):
    """A run checkpointed every 2 steps is resumed from step 2 (as if it had stopped there): each
    step is in TensorBoard once, and the resumed run's MLflow run (a tracker added on resuming)
    starts at step 3."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("alembic")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "resumed"
    checkpoints = {"save_steps": 2, "save_total_limit": 10, "logging_steps": 1}
    run(tiny_encoder, data, out, ["tensorboard"], **checkpoints)
    first = tensorboard_scalars(out)
    run(tiny_encoder, data, out, ["tensorboard", "mlflow"], resume_from=str(out / "checkpoints" / "step-2"),
        **checkpoints)
    scalars = tensorboard_scalars(out)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    assert [step for step, _ in scalars["eval/accuracy"]] == [3, 4, 6, 8]
    assert_series(scalars["train/loss"], first["train/loss"])  # an exact resume
    [mlflow_run] = mlflow_runs(out)
    history = mlflow_client(out).get_metric_history(mlflow_run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(3, STEPS + 1))


# --- Weights & Biases, offline --------------------------------------------------------------------------

def settled_bytes(path: Path, wait_s: float = 10.0) -> bytes:
    """The file once its bytes have stopped changing: W&B's service process may still be flushing
    the offline run file when the run returns (a record cut short fails to parse under load)."""
    import time

    raw, deadline = path.read_bytes(), time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = path.read_bytes()
        if again == raw:
            break
        raw = again
    return raw


def wandb_records(path: Path):
    """The records of an offline W&B run file: a 7-byte header, then 32 KiB blocks of chunks
    (checksum: 4 bytes, length: 2, type: 1 = whole, 2 = first, 3 = middle, 4 = last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    raw, position, pending = settled_bytes(path), 7, b""
    while position + 7 <= len(raw):
        left_in_block = 32768 - position % 32768
        if left_in_block < 7:
            position += left_in_block
            continue
        length, kind = int.from_bytes(raw[position + 4:position + 6], "little"), raw[position + 6]
        pending += raw[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            yield Record.FromString(pending)
            pending = b""


def test_wandb_offline_has_the_metrics_at_their_steps_and_the_settings(tiny_encoder, data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "wandb-run"
    run(tiny_encoder, data, out, ["wandb"])
    [run_file] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(wandb_records(run_file))
    history: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    history.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
    logged = log_records(out, "train")
    assert_series(history["train/loss"], [(r["step"], r["loss"]) for r in logged])
    evaluations = log_records(out, "evaluate")
    assert_series(history["eval/accuracy"], [(r["step"], r["metrics"]["accuracy"]) for r in evaluations])
    assert [step for step, _ in history["test/accuracy"]] == [STEPS]
    config = {item.key: json.loads(item.value_json) for record in records
              if record.WhichOneof("record_type") == "config" for item in record.config.update}
    assert config["batch_size"] == 8 and config["report_to"] == "wandb"


def test_trackio_local_store_has_the_metrics_at_their_steps_and_the_settings(tiny_encoder, data, tmp_path, monkeypatch):
    """Runs where trackio is installed (it is not in the test extra: it pins pillow<13)."""
    trackio = pytest.importorskip("trackio")
    store = tmp_path / "trackio-store"
    monkeypatch.setenv("TRACKIO_DIR", str(store))
    monkeypatch.setattr(trackio.sqlite_storage, "TRACKIO_DIR", store, raising=False)
    monkeypatch.setattr(trackio, "TRACKIO_DIR", store, raising=False)
    out = tmp_path / "trackio-run"
    run(tiny_encoder, data, out, ["trackio"])
    storage = trackio.SQLiteStorage
    [project] = storage.get_projects()
    [run_name] = storage.get_runs(project)
    history: dict[str, list[tuple[int, float]]] = {}
    for entry in storage.get_logs(project, run_name):
        for key, value in entry.items():
            if "/" in key:
                history.setdefault(key, []).append((entry["step"], value))
    logged = log_records(out, "train")
    assert_series(history["train/loss"], [(r["step"], r["loss"]) for r in logged])
    evaluations = log_records(out, "evaluate")
    assert_series(history["eval/accuracy"], [(r["step"], r["metrics"]["accuracy"]) for r in evaluations])
    assert [step for step, _ in history["test/accuracy"]] == [STEPS]
    config = storage.get_run_config(project, run_name)
    assert config["batch_size"] == 8 and config["report_to"] == "trackio"
