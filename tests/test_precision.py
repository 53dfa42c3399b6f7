"""Prediction under bf16 autocast (``load(precision="bf16")``, ``predict --precision bf16``): the
encoder's matrix products run in bf16, what the task gets back is fp32, and the predictions are
those of the fp32 model up to bf16 rounding."""

import json

import pytest
import torch
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.cli import app
from finetune_kit.config import ConfigError
from tests.conftest import NEGATIVE, POSITIVE, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tiny_encoder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_jsonl(folder / "train.jsonl", rows)
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(train), output_dir=str(folder / "m"),
             max_steps=1, report_plots=False, bootstrap_resamples=0)
    return folder / "m"


def linear_output_dtypes(predictor, texts):
    dtypes = set()
    linears = [m for m in predictor.model.modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype)) for m in linears]
    try:
        predictions = predictor.predict(texts)
    finally:
        for handle in handles:
            handle.remove()
    return dtypes, predictions


def test_bf16_runs_the_linear_layers_in_bf16_and_scores_match_fp32(model_dir):
    texts = POSITIVE + NEGATIVE
    fp32_dtypes, fp32 = linear_output_dtypes(fk.load(model_dir), texts)
    bf16_dtypes, bf16 = linear_output_dtypes(fk.load(model_dir, precision="bf16"), texts)
    assert fp32_dtypes == {torch.float32}
    assert bf16_dtypes == {torch.bfloat16}
    assert bf16 != fp32  # the rounding shows in the scores

    def positive(prediction):
        assert isinstance(prediction["score"], float)
        return prediction["score"] if prediction["label"] == "pos" else 1 - prediction["score"]

    for a, b in zip(fp32, bf16):
        assert abs(positive(a) - positive(b)) < 0.01
        if abs(positive(a) - 0.5) > 0.01:  # not a near tie
            assert a["label"] == b["label"]


def test_an_unknown_precision_is_one_line(model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^precision: 'fp16' is not one of fp32, bf16$"):
        fk.load(model_dir, precision="fp16")
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": POSITIVE[0]}])
    result = CliRunner().invoke(app, ["predict", str(model_dir), "--input", str(data), "--output",
                                      str(tmp_path / "out.jsonl"), "--precision", "int4"])
    assert result.exit_code == 2
    assert "error: precision: 'int4' is not one of fp32, bf16" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_predict_bf16_writes_the_bf16_predictions(model_dir, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in POSITIVE[:3]])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", str(model_dir), "--input", str(data), "--output", str(out),
                                      "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == fk.load(model_dir, precision="bf16").predict(POSITIVE[:3])
