"""The example third-party plugin (examples/plugin_example) found through the real entry point.

Nothing is pip-installed: a ``*.dist-info`` folder built from the plugin's own pyproject.toml is
put on ``sys.path`` with the plugin's source, which is exactly what ``importlib.metadata`` sees
after ``pip install``.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import finetune_kit as fk
from finetune_kit.registry import available_tasks, get_task_class, task_origin
from finetune_kit.task import DataError, Task
from tests.conftest import REPO, write_csv, write_jsonl

PLUGIN_DIR = REPO / "examples" / "plugin_example"
PLUGIN_MODULE = PLUGIN_DIR / "finetune_kit_example_plugin" / "__init__.py"

ROWS = [
    {"text": "great film and fine acting", "label": "4.5"},
    {"text": "bad movie", "label": "1"},
    {"text": "i love this story", "label": "4.0"},
    {"text": "awful film and poor acting", "label": "0.5"},
    {"text": "excellent music", "label": "5"},
    {"text": "really boring scene", "label": "1.5"},
    {"text": "nice work by the actor", "label": "3.5"},
    {"text": "an awful day", "label": "2"},
]


@pytest.fixture()
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the plugin discoverable as if pip-installed; returns its distribution name."""
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name, version = project["name"], project["version"]
    entry_points = project["entry-points"]["finetune_kit.tasks"]
    site = tmp_path / "site-packages"
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(
        "[finetune_kit.tasks]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()), encoding="utf-8")
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.syspath_prepend(str(site))
    return name


@pytest.fixture()
def regression_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_csv(tmp_path / "train.csv", ROWS * 2),
        "validation": write_csv(tmp_path / "validation.csv", ROWS),
    }


def test_registered_through_the_entry_point(plugin_installed):
    from finetune_kit_example_plugin import TextRegressionTask

    assert "text-regression" in available_tasks()
    assert {"text-classification", "pair-classification"} <= set(available_tasks())  # built-ins still there
    assert get_task_class("text-regression") is TextRegressionTask
    assert task_origin("text-regression") == plugin_installed
    # every protocol member present
    assert isinstance(TextRegressionTask(fk.api.task_settings({}, TextRegressionTask)), Task)


def test_plugin_imports_only_finetune_kit_not_builtin_plugins():
    tree = ast.parse(PLUGIN_MODULE.read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(m.split(".")[0] == "finetune_kit_tasks" for m in modules), modules


def test_two_step_train_save_load_predict(plugin_installed, tiny_encoder, regression_files, tmp_path):
    out = tmp_path / "model"
    result = fk.train(task="text-regression", model=tiny_encoder, train_file=str(regression_files["train"]),
                      validation_file=str(regression_files["validation"]), output_dir=str(out),
                      max_steps=2, batch_size=4, learning_rate=1e-3)
    assert result.global_step == 2
    validation = result.metrics["validation"]
    assert {"mse", "mae", "pearson", "loss", "num_examples"} <= set(validation)
    assert validation["num_examples"] == len(ROWS)
    assert all(math.isfinite(validation[k]) for k in ("mse", "mae", "pearson", "loss"))
    assert "| mse |" in (out / "report.md").read_text(encoding="utf-8")

    texts = ["great film", "bad movie", "a day", "i love this story and the music"]
    predictor = fk.load(out)
    first = predictor.predict(texts)
    assert len(first) == len(texts)
    assert all(set(p) == {"score"} and isinstance(p["score"], float) and math.isfinite(p["score"])
               for p in first)
    assert predictor.predict(texts) == first  # same predictor, twice
    assert fk.load(out).predict(texts) == first  # a fresh load
    # the saved target mean/std come back: evaluating the loaded model reproduces training's figures
    again = fk.evaluate(out, regression_files["validation"], output=tmp_path / "eval")
    assert again["mse"] == pytest.approx(validation["mse"], rel=1e-5)
    assert again["pearson"] == pytest.approx(validation["pearson"], rel=1e-4, abs=1e-6)


def test_non_numeric_target_is_a_data_error_with_file_and_line(plugin_installed, tiny_encoder, tmp_path):
    train = write_csv(tmp_path / "train.csv", [*ROWS[:2], {"text": "a day", "label": "n/a"}, *ROWS[2:]])
    with pytest.raises(DataError, match=rf"^{re.escape(str(train))} line 4: column 'label' must be a number"):
        fk.train(task="text-regression", model=tiny_encoder, train_file=str(train),
                 output_dir=str(tmp_path / "m"), max_steps=1)
    assert not (tmp_path / "m").exists()  # nothing written before the data is checked

    # JSON Lines: targets written as strings, one of which is not a number
    validation = write_jsonl(tmp_path / "dev.jsonl", [{"text": "fine", "label": "2.5"}, {"text": "ok", "label": "great"}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(validation))} line 2: column 'label' must be a number"):
        fk.train(task="text-regression", model=tiny_encoder, train_file=str(write_csv(tmp_path / "t.csv", ROWS)),
                 validation_file=str(validation), output_dir=str(tmp_path / "m"), max_steps=1)


@pytest.mark.parametrize("odd", ["great", True], ids=["string", "bool"])
def test_jsonl_mixed_type_target_is_a_data_error(plugin_installed, tiny_encoder, tmp_path, odd):
    validation = write_jsonl(tmp_path / "dev.jsonl", [{"text": "fine", "label": 2.5}, {"text": "ok", "label": odd}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(validation))} line 2: "):
        fk.train(task="text-regression", model=tiny_encoder, train_file=str(write_csv(tmp_path / "t.csv", ROWS)),
                 validation_file=str(validation), output_dir=str(tmp_path / "m"), max_steps=1)


def test_cli_lists_the_plugin_task(plugin_installed):
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    line = next((ln for ln in result.output.splitlines() if "text-regression" in ln), None)
    assert line is not None, result.output
    assert plugin_installed in line
    assert "cannot be loaded" not in result.output
    assert "text-classification" in result.output



def test_the_plugin_refuses_every_option_through_the_core(plugin_installed):
    from finetune_kit.task import TaskError, TaskSettings
    from finetune_kit_example_plugin import TextRegressionTask

    assert TextRegressionTask.task_options == ()
    with pytest.raises(TaskError, match=r"^task_options: pooling not known to text-regression \(it takes no options\)$"):
        TextRegressionTask(TaskSettings(options={"pooling": "mean"}))


def test_cli_describes_the_plugin_task(plugin_installed):
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    result = CliRunner().invoke(app, ["tasks", "text-regression"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0] == (f"text-regression (provided by {plugin_installed}): Single-text regression ([CLS] vector -> "
                        f"linear, MSE), e.g. a rating or a score")
    assert "default metric mse (lower is better)" in lines
    assert lines[-1] == "It takes no options."
