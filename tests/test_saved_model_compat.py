"""Models saved by finetune-kit 0.1.0 still load and predict what 0.1.0 predicted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

import finetune_kit as fk

from .conftest import FIXTURES

SAVED = FIXTURES / "saved-0.1.0"
EXPECTED = json.loads((SAVED / "expected.json").read_text(encoding="utf-8"))


def _copy_with_base(tmp_path: Path, name: str) -> Path:
    """A copy of one saved model whose recorded base encoder is the fixture's, where it now lies."""
    shutil.copytree(SAVED, tmp_path / "saved")
    model_dir = tmp_path / "saved" / name
    manifest_path = model_dir / "finetune_kit.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["base_model"] = manifest["config"]["model"] = str(tmp_path / "saved" / "base-encoder")
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    return model_dir


def _assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key, value in e.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert g[key] == value, key


def test_the_fixture_is_in_the_0_1_0_layout():
    with safe_open(str(SAVED / "text-classification" / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert any(k.startswith("encoder.") for k in keys)
    assert not (SAVED / "token-classification-lora" / "model.safetensors").exists()
    assert (SAVED / "token-classification-lora" / "adapter_model.safetensors").is_file()


def test_a_0_1_0_text_classifier_loads_and_predicts_as_it_did(tmp_path):
    model_dir = _copy_with_base(tmp_path, "text-classification")
    case = EXPECTED["text-classification"]
    predictions = fk.load(model_dir).predict(case["inputs"])
    assert {p["label"] for p in predictions} == {"pos", "neg"}  # the fixture tells its inputs apart
    _assert_same_predictions(predictions, case["predictions"])


def test_a_0_1_0_lora_tagger_loads_and_predicts_as_it_did(tmp_path):
    model_dir = _copy_with_base(tmp_path, "token-classification-lora")
    case = EXPECTED["token-classification-lora"]
    predictions = fk.load(model_dir).predict(case["inputs"])
    assert any(p["entities"] for p in predictions)
    _assert_same_predictions(predictions, case["predictions"])
