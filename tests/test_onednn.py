"""Linear layers through oneDNN at inference on the CPU: taken only without autograd or autocast,
on plain fp32 tensors, with F.linear's product; the prediction path takes it; oneDNN's kernel
cache is capped."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import finetune_kit as fk
from finetune_kit import onednn
from tests.conftest import NEGATIVE, POSITIVE

pytestmark = pytest.mark.skipif(not onednn.onednn_linear_works(), reason="this torch has no working oneDNN linear")


@pytest.fixture()
def calls(monkeypatch):
    seen = []

    def spy(x, weight, bias):
        seen.append(x.shape)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    monkeypatch.setattr(onednn, "onednn_linear", spy)
    return seen


def test_an_eligible_linear_goes_to_onednn_with_the_same_product(calls):
    layer = torch.nn.Linear(16, 24)
    x = torch.randn(4, 7, 16)
    with torch.no_grad():
        expected = layer(x)
        with onednn.onednn_linears():
            got = layer(x)
    assert calls == [torch.Size([4, 7, 16])]
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_training_autocast_and_other_dtypes_keep_f_linear(calls):
    layer = torch.nn.Linear(16, 24)
    x = torch.randn(3, 16)
    with onednn.onednn_linears():
        assert layer(x).requires_grad  # autograd on: F.linear, with its gradient
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16  # autocast still casts
        with torch.no_grad():
            assert layer.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert calls == []


def run_python(code: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != onednn.PRIMITIVE_CACHE_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cap_is_a_default_the_users_setting_overrides(monkeypatch):
    monkeypatch.delenv(onednn.PRIMITIVE_CACHE_ENV, raising=False)
    onednn.limit_primitive_cache()
    assert os.environ[onednn.PRIMITIVE_CACHE_ENV] == str(onednn.PRIMITIVE_CACHE_CAPACITY)
    monkeypatch.setenv(onednn.PRIMITIVE_CACHE_ENV, "300")
    onednn.limit_primitive_cache()
    assert os.environ[onednn.PRIMITIVE_CACHE_ENV] == "300"


def test_importing_the_package_caps_onednns_kernel_cache():
    """oneDNN's verbose log says whether a product's kernel came from its cache: after more
    shapes than the cap, the first shape's kernel is built again once ``finetune_kit`` is
    imported; with torch alone (oneDNN's own capacity) it is found in the cache."""
    loop = f"""
import torch
weight = torch.randn(24, 16)
with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
    for rows in list(range(1, {3 * onednn.PRIMITIVE_CACHE_CAPACITY})) + [1]:
        torch.ops.mkldnn._linear_pointwise(torch.randn(rows, 16), weight, None, "none", [], "")
"""

    def last_kernel(code: str) -> str:
        created = [line for line in run_python(code).splitlines() if "create:" in line]
        assert len(created) >= 3 * onednn.PRIMITIVE_CACHE_CAPACITY - 1
        return created[-1]

    assert "cache_miss" in last_kernel("import finetune_kit\n" + loop)
    assert "cache_hit" in last_kernel(loop)


def test_the_switch_turns_it_off(monkeypatch, calls):
    monkeypatch.setenv(onednn.ENV_SWITCH, "0")
    onednn.onednn_linear_works.cache_clear()
    try:
        with torch.no_grad(), onednn.onednn_linears():
            F.linear(torch.randn(2, 4), torch.randn(3, 4))
        assert calls == []
    finally:
        monkeypatch.delenv(onednn.ENV_SWITCH)
        onednn.onednn_linear_works.cache_clear()


def test_predictions_run_through_it_and_match_f_linear(tiny_encoder, sentiment_files, tmp_path, calls, monkeypatch):
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             output_dir=str(tmp_path / "m"), max_steps=1, report_plots=False, bootstrap_resamples=0)
    predictor = fk.load(tmp_path / "m")
    fast = predictor.predict(POSITIVE + NEGATIVE)
    assert calls  # the encoder's linear layers went through oneDNN
    monkeypatch.setattr(onednn, "onednn_linear_works", lambda: False)
    plain = predictor.predict(POSITIVE + NEGATIVE)
    assert [p["label"] for p in fast] == [p["label"] for p in plain]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(fast, plain)) < 1e-5


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="inductor needs a C++ compiler")
def test_a_compiled_model_is_left_to_its_compiler():
    """Under torch.compile with dynamic shapes (Accelerate's dynamo backend compiles the model it
    prepares), the mode keeps F.linear: inductor cannot lower oneDNN's op there."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 24)
    compiled = torch.compile(layer, dynamic=True)
    x = torch.randn(4, 7, 16)
    with torch.no_grad():
        expected = F.linear(x, layer.weight, layer.bias)
        with onednn.onednn_linears():
            got = compiled(x)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)


def test_training_under_accelerates_dynamo_backend_evaluates_and_saves_plain_weights(
        tiny_encoder, sentiment_files, tmp_path, monkeypatch):
    """``accelerate launch --dynamo_backend ...`` (here its variable, with dynamo's eager backend:
    traced, not code-generated) compiles the prepared model; evaluation then runs the compiled
    model under the oneDNN mode, and the best weights are saved under the model's own names."""
    from safetensors import safe_open

    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "EAGER")
    result = fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
                      validation_file=str(sentiment_files["validation"]), output_dir=str(tmp_path / "m"),
                      max_steps=2, report_plots=False, bootstrap_resamples=0)
    assert result.metrics["validation"]["num_examples"] == 16
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as saved:
        names = list(saved.keys())
    assert names and not any("_orig_mod" in name for name in names)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    predictor = fk.load(tmp_path / "m")
    assert {p["label"] for p in predictor.predict(POSITIVE + NEGATIVE)} <= {"pos", "neg"}
