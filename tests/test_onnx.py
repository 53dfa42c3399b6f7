"""ONNX export (``finetune-kit export --format onnx``) and ONNX Runtime as a predictor's backend:
every task with a transformers head exports, loads with onnxruntime and predicts what the torch
model predicts (its raw outputs within 1e-3 on the same batch); int8 exports are smaller and
quantized; heads of finetune-kit's own are refused in one line; ``auto`` picks the backend by
the directory."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit import onnx_export
from finetune_kit.api import export
from finetune_kit.cli import app
from finetune_kit.config import ConfigError
from finetune_kit.inference import make_collate, prepare_features, rows_dataset, split_model_inputs
from finetune_kit.onnx_runtime import OnnxError, OnnxTaskModel
from tests.conftest import NEGATIVE, POSITIVE, one_torch_thread, write_csv, write_jsonl
from tests.test_multi_label_classification import ROWS as LABEL_SETS
from tests.test_multiple_choice import FLAT_FIELDS, flat_rows
from tests.test_question_answering import toy_squad, write_squad
from tests.test_span_ner import NESTED, span_rows
from tests.test_token_classification import SENTENCES, conll_text

runner = CliRunner()
one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
QUICK = {"max_steps": 1, "batch_size": 8, "learning_rate": 1e-2, "max_length": 32, "report_plots": False,
         "bootstrap_resamples": 0}

TEXTS = [POSITIVE[0], NEGATIVE[1], POSITIVE[3], NEGATIVE[4], "an unknown zzz word"]
PAIRS = [("the cat sat on the mat", "the cat sat"), ("she went to work", "the dog ran"),
         ("a man made a film", "a film was made")]
CONTEXT = "the dog sat on the park . " * 4  # several windows of 32 tokens
# What each exported task predicts from, in the shapes ``Predictor.predict`` takes.
INPUTS = {
    "text-classification": TEXTS,
    "pair-classification": PAIRS,
    "token-classification": [text for text, _ in SENTENCES[:6]] + ["the " * 40 + "dog"],
    "question-answering": [{"question": "where", "context": CONTEXT},
                           {"question": "who sat", "context": "the cat sat"}],
    "multi-label-classification": TEXTS,
    "regression": TEXTS,
    "multiple-choice": [{"question": "the cat sat on the mat", "choices": ["cat", "dog"]},
                        {"question": "i love this music", "choices": ["hate", "film", "plot", "music"]},
                        {"question": "a big red film", "choices": ["small", "red", "blue"]}],
}
EXPORTED = list(INPUTS)


def task_data(task: str, root: Path) -> tuple[Path, dict]:
    """A small training file of ``task`` and the settings it trains with."""
    if task == "text-classification":
        rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
        return write_csv(root / "texts.csv", rows), {}
    if task == "pair-classification":  # with LoRA: the export merges it
        rows = [{"text": a, "text_pair": b, "label": label} for (a, b), label in zip(PAIRS, ["yes", "no", "yes"])]
        return write_csv(root / "pairs.csv", rows * 2), {"lora": True}
    if task == "token-classification":
        (root / "tags.conll").write_text(conll_text(SENTENCES), encoding="utf-8")
        return root / "tags.conll", {}
    if task == "question-answering":
        return write_squad(root / "squad.json", toy_squad()), {"task_options": {"doc_stride": 8}}
    if task == "multi-label-classification":
        return write_jsonl(root / "labels.jsonl", [{"text": t, "labels": labels} for t, labels in LABEL_SETS]), {}
    if task == "regression":  # sigmoid: the task's own forward on the instance, the class's logits
        rows = [{"text": t, "label": float(i % 5)} for i, t in enumerate(POSITIVE + NEGATIVE)]
        return write_csv(root / "scores.csv", rows), {"task_options": {"sigmoid": True}}
    if task == "multiple-choice":
        return write_csv(root / "choices.csv", flat_rows(), FLAT_FIELDS), {}
    if task == "span-ner":
        return write_jsonl(root / "spans.jsonl", span_rows(NESTED)), {}
    if task == "crf":
        (root / "tags.conll").write_text(conll_text(SENTENCES), encoding="utf-8")
        return root / "tags.conll", {"task": "token-classification", "task_options": {"crf": True}}
    raise KeyError(task)


@pytest.fixture(scope="module")
def trained(tiny_encoder, tmp_path_factory):
    """The torch model directory of a task (trained once per module, two steps)."""
    root = tmp_path_factory.mktemp("onnx-runs")
    made: dict[str, Path] = {}

    def train(task: str) -> Path:
        if task not in made:
            data, settings = task_data(task, root)
            settings = {"task": task, **settings}
            out = root / task
            fk.train(model=tiny_encoder, train_file=str(data), output_dir=str(out), **{**QUICK, **settings})
            made[task] = out
        return made[task]

    return train


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The fp32 ONNX directory of a task's model (exported once per module)."""
    root = tmp_path_factory.mktemp("onnx-exports")
    made: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in made:
            made[task] = export(trained(task), root / task, format="onnx")
        return made[task]

    return get


def manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "finetune_kit.json").read_text(encoding="utf-8"))


def model_batch(predictor, inputs: list) -> dict:
    """The collated batch ``predict`` would run the model on, for all of ``inputs`` at once."""
    raw = rows_dataset(predictor.task.to_examples(inputs))
    features = prepare_features(predictor.task, raw, "predict")
    batch, _ = split_model_inputs(make_collate(predictor.task)([dict(f) for f in features]))
    return batch


def assert_same_predictions(got, expected) -> None:
    """Equal labels, tags, answers and spans; scores and values within 1e-4."""
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_same_predictions(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same_predictions(g, e)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-4)
    else:
        assert got == expected


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- every exportable task ---------------------------------------------------------------------------

@pytest.mark.parametrize("task", EXPORTED)
def test_exported_model_predicts_what_the_torch_model_predicts(task, trained, exported):
    torch_dir, onnx_dir = trained(task), exported(task)
    ours, theirs = fk.load(onnx_dir), fk.load(torch_dir)
    assert (ours.backend, theirs.backend) == ("onnxruntime", "torch")
    assert theirs.is_adapter == (task == "pair-classification")  # a LoRA model, exported merged
    assert isinstance(ours.model, OnnxTaskModel)
    # the same outputs, under the same names, from the same batch
    batch = model_batch(theirs, INPUTS[task])
    with torch.no_grad():
        expected = theirs.model(**batch)
    got = ours.model(**batch)
    names = [k for k, v in expected.items() if k != "loss" and isinstance(v, torch.Tensor)]
    assert sorted(got) == sorted(names)
    for name in names:
        torch.testing.assert_close(got[name], expected[name].float(), atol=1e-3, rtol=0)
    assert_same_predictions(ours.predict(INPUTS[task]), theirs.predict(INPUTS[task]))
    # a full model directory without torch weights, the graph recorded in the manifest
    record = manifest(onnx_dir)["onnx"]
    assert record["file"] == "model.onnx" and record["quantization"] is None
    assert record["outputs"] == names and record["max_abs_diff_fp32"] < 1e-3
    assert manifest(onnx_dir)["config"]["lora"] is False
    assert {"config.json", "finetune_kit.json", "model.onnx", "tokenizer.json"} <= {p.name for p in onnx_dir.iterdir()}
    assert not list(onnx_dir.glob("*.safetensors"))


def test_multiple_choice_graph_has_a_choice_axis_and_padded_choices_never_win(exported):
    predictor = fk.load(exported("multiple-choice"))
    assert manifest(predictor.model_dir)["onnx"]["dynamic_axes"] == ["batch", "choices", "sequence"]
    logits = predictor.model(**model_batch(predictor, INPUTS["multiple-choice"]))["logits"]
    assert logits.shape == (3, 4)
    assert torch.isinf(logits[0, 2:]).all() and torch.isfinite(logits[1]).all() and torch.isinf(logits[2, 3])


def test_evaluate_gives_the_torch_metrics_without_a_loss(trained, exported, tmp_path):
    data = write_csv(tmp_path / "test.csv", [{"text": t, "label": "pos"} for t in POSITIVE[:4]]
                     + [{"text": t, "label": "neg"} for t in NEGATIVE[:4]])
    ours = fk.evaluate(exported("text-classification"), data, tmp_path / "ours", plots=False, bootstrap_resamples=0)
    theirs = fk.evaluate(trained("text-classification"), data, tmp_path / "theirs", plots=False,
                         bootstrap_resamples=0)
    theirs_loss = theirs["loss"]
    assert "loss" not in ours and theirs.pop("loss") > 0
    assert ours == theirs
    result = runner.invoke(app, ["evaluate", str(exported("text-classification")), "--data", str(data), "--output",
                                 str(tmp_path / "cli"), "--no-plots", "--bootstrap-resamples", "0", "--backend",
                                 "torch"])
    assert result.exit_code == 2 and "holds an ONNX model only" in result.output
    result = runner.invoke(app, ["evaluate", str(trained("text-classification")), "--data", str(data), "--output",
                                 str(tmp_path / "bf16"), "--no-plots", "--bootstrap-resamples", "0", "--precision",
                                 "bf16"])
    assert result.exit_code == 0, result.output
    bf16 = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert bf16[data.stem]["num_examples"] == 8 and abs(bf16[data.stem]["loss"] - theirs_loss) < 0.01


# -- int8 ----------------------------------------------------------------------------------------------

def test_int8_export_is_smaller_quantized_and_predicts(trained, exported, tmp_path, monkeypatch):
    """Through the command line, with the weights in a file beside the graph (as for a model of
    over 1.5 GB): no fp32 graph is left behind."""
    import onnx

    monkeypatch.setattr(onnx_export, "SINGLE_FILE_BYTES", 0)
    out = tmp_path / "int8"
    result = runner.invoke(app, ["export", str(trained("text-classification")), "--format", "onnx",
                                 "--quantize", "int8", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and str(out) in result.output
    assert {p.name for p in out.glob("model.onnx*")} == {"model.onnx", "model.onnx.data"}
    assert not [p for p in out.iterdir() if "fp32" in p.name]
    int8, fp32 = onnx.load(str(out / "model.onnx")), onnx.load(str(exported("text-classification") / "model.onnx"))
    assert int8.ByteSize() < fp32.ByteSize()  # the graphs with their weights (the embeddings stay fp32)
    assert "MatMulIntegerToFloat" not in {node.op_type for node in fp32.graph.node}
    # The encoder layers' six linear layers each (query, key, value, attention output, FFN in and
    # out) are int8; the pooler and the classifier stay fp32 products of their fp32 weights. Query,
    # key and value read one activation: it is quantized once for the three.
    layers = json.loads((trained("text-classification") / "config.json").read_text())["num_hidden_layers"]
    assert sum(node.op_type == "MatMulIntegerToFloat" for node in int8.graph.node) == 6 * layers
    assert sum(node.op_type == "ReduceMax" for node in int8.graph.node) == 4 * layers
    fp32_weights = {init.name for init in int8.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    head_products = [node for node in int8.graph.node if node.op_type in ("Gemm", "MatMul")
                     and any(name in fp32_weights for name in node.input)]
    assert len(head_products) == 2, [node.name for node in head_products]  # pooler, classifier
    assert manifest(out)["onnx"]["quantization"] == onnx_export.INT8_SETTINGS
    predictor = fk.load(out)
    predictions = predictor.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    assert all(p["label"] in ("pos", "neg") and 0.5 <= p["score"] <= 1 for p in predictions)
    logits = predictor.model(**model_batch(predictor, TEXTS))["logits"]
    assert logits.shape == (len(TEXTS), 2) and torch.isfinite(logits).all()


def layer_product_graph(path: Path, weight) -> Path:
    """A one-product graph whose MatMul carries an encoder layer's name scope, as the exporter writes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="node_MatMul_1")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes",
                            value="['', 'model', 'model.bert.encoder.layer.0.intermediate.dense', 'linear']")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def test_int8_products_give_each_token_its_own_activation_scale(tmp_path):
    """One token with a value 200 times the others' does not coarsen the others' steps (one scale
    for the batch would give them a step of 1.6, larger than their values); weights are int8 per
    output channel (a column 100 times the others does not flatten them)."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8)).astype(np.float32)
    weight[:, 0] *= 100
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    x[0, 0, 3] = 200.0
    onnx_export.quantize_int8(layer_product_graph(tmp_path / "fp32-model.onnx", weight), tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # the fp32 graph removed
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got, expected = session.run(None, {"x": x})[0], x @ weight
    # Each input is rounded by at most half its token's step (max |x| / 127), each weight by half
    # its column's (max |w| / 127): the error of every output is bounded by the sums of both.
    # With one step for the batch (200 / 127) the other tokens' errors would be 70 times larger.
    token_steps = np.abs(x).max(axis=-1, keepdims=True) / 127
    column_steps = np.abs(weight).max(axis=0) / 127
    bound = token_steps / 2 * np.abs(weight).sum(axis=0) + np.abs(x).sum(-1, keepdims=True) * column_steps / 2
    assert (np.abs(got - expected) <= bound * 1.01 + 1e-4).all()
    assert np.abs(got - expected)[0, 1:].max() < 0.05 * np.abs(expected[0, 1:]).max()


def guarded_softmax_graph(path: Path, fill: float) -> Path:
    """softmax(x + mask) behind the exporter's NaN guard, the mask filled with ``fill``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Where", ["keep", "zero", "fill"], ["mask"]),
             helper.make_node("Add", ["x", "mask"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
             helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["guarded"]),
             helper.make_node("Identity", ["guarded"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("keep", TensorProto.BOOL, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                               numpy_helper.from_array(np.array(fill, np.float32), "fill")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def test_softmax_nan_guards_go_only_where_masks_are_finite(tmp_path, exported):
    import numpy as np
    import onnx
    import onnxruntime as ort

    finite, infinite = (guarded_softmax_graph(tmp_path / f"{name}.onnx", fill)
                        for name, fill in (("finite", np.finfo(np.float32).min), ("infinite", float("-inf"))))
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]], np.float32)
    keep = np.array([[True, True, False], [False, False, False]])  # the second row all masked
    before = {path: ort.InferenceSession(str(path)).run(None, {"x": x, "keep": keep})[0] for path in (finite, infinite)}
    for path in (finite, infinite):
        onnx_export.simplify_graph(path)
    ops = {path: [node.op_type for node in onnx.load(str(path)).graph.node] for path in (finite, infinite)}
    assert "IsNaN" not in ops[finite] and ops[finite].count("Where") == 1  # the mask's own Where stays
    assert ops[infinite].count("IsNaN") == 1  # -inf could make a row NaN: the guard stays
    for path in (finite, infinite):
        after = ort.InferenceSession(str(path)).run(None, {"x": x, "keep": keep})[0]
        np.testing.assert_array_equal(after, before[path])
    assert np.isfinite(before[finite]).all() and (before[infinite][1] == 0).all()
    # an exported encoder has no guard left, and its outputs were checked against torch's
    graph_ops = {node.op_type for node in onnx.load(str(exported("text-classification") / "model.onnx")).graph.node}
    assert "Softmax" in graph_ops and "IsNaN" not in graph_ops


# -- the command line and the backends -------------------------------------------------------------------

def test_cli_predict_with_either_backend(trained, exported, tmp_path):
    source, onnx_dir = trained("token-classification"), exported("token-classification")
    sentences = tmp_path / "in.conll"
    sentences.write_text(conll_text(SENTENCES[:4]), encoding="utf-8")
    written = {}
    for name, model_dir, backend in (("torch", source, "torch"), ("auto", onnx_dir, "auto"),
                                     ("ort", onnx_dir, "onnxruntime")):
        result = runner.invoke(app, ["predict", str(model_dir), "--input", str(sentences), "--output",
                                     str(tmp_path / f"{name}.jsonl"), "--backend", backend])
        assert result.exit_code == 0, result.output
        written[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert written["auto"] == written["ort"] and len(written["auto"]) == 4
    assert [p["tags"] for p in written["auto"]] == [p["tags"] for p in written["torch"]]


def test_help_lists_the_options():
    export_help = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output
    assert "--format" in export_help and "--quantize" in export_help and "onnx" in export_help
    predict_help = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"}).output
    assert "--backend" in predict_help and "onnxruntime" in predict_help


def test_onnxruntime_backend_on_a_torch_directory_is_one_line(trained, tmp_path):
    source = trained("text-classification")
    data = write_csv(tmp_path / "in.csv", [{"text": t} for t in TEXTS])
    line = one_line_error(runner.invoke(app, ["predict", str(source), "--input", str(data), "--output",
                                              str(tmp_path / "p.jsonl"), "--backend", "onnxruntime"]))
    assert "model.onnx" in line and "finetune-kit export" in line and "--format onnx" in line
    with pytest.raises(OnnxError, match="holds no model.onnx"):
        fk.load(source, backend="onnxruntime")
    assert fk.load(source).backend == "torch"
    with pytest.raises(ConfigError, match="backend: 'tensorrt' is not one of auto, torch, onnxruntime"):
        fk.load(source, backend="tensorrt")


def test_torch_backend_and_bf16_on_an_onnx_directory_are_errors(exported):
    onnx_dir = exported("text-classification")
    with pytest.raises(OnnxError, match="holds an ONNX model only"):
        fk.load(onnx_dir, backend="torch")
    with pytest.raises(ConfigError, match="precision: bf16 is for the torch backend"):
        fk.load(onnx_dir, precision="bf16")
    assert fk.load(onnx_dir, backend="onnxruntime").backend == "onnxruntime"


@pytest.mark.parametrize("task, named", [("span-ner", "span-ner: its model (SpanClassifier"),
                                         ("crf", "token-classification: its model (TokenTagger, with a CRF")])
def test_heads_of_our_own_are_refused_in_one_line(task, named, trained, tmp_path):
    out = tmp_path / "out"
    line = one_line_error(runner.invoke(app, ["export", str(trained(task)), "--format", "onnx", "--output", str(out)]))
    assert named in line and "finetune-kit's own head" in line, line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_masked_lm_forward_is_refused():
    from transformers import AutoModelForMaskedLM, BertConfig

    model = AutoModelForMaskedLM.from_config(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=16))
    with pytest.raises(OnnxError, match=r"masked-lm: its model \(BertForMaskedLM\) is not one of the transformers "
                                        r"heads .* --encoder"):
        onnx_export.exportable_model(model, "masked-lm")


def test_a_non_empty_output_is_refused_and_left_alone(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    line = one_line_error(runner.invoke(app, ["export", str(trained("text-classification")), "--format", "onnx",
                                              "--output", str(out)]))
    assert "exists and is not empty" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_empty_output_folder_is_taken_whole_or_not_at_all(trained, tmp_path, monkeypatch):
    """A failure once files are being written leaves the folder as it was and no staging folder."""
    out = tmp_path / "out"
    out.mkdir()

    def broken(model, sample, inputs, outputs, choices, path, large):
        path.write_bytes(b"half a graph")
        raise RuntimeError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(onnx_export, "export_graph", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            export(trained("text-classification"), out, format="onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any(out.iterdir())


def test_a_graph_that_differs_from_the_torch_model_is_not_written(trained, exported, tmp_path, monkeypatch):
    """The exported graph is checked against the torch model before the folder is moved into place;
    here the export writes another model's graph of the same shapes."""
    other = exported("pair-classification") / "model.onnx"
    monkeypatch.setattr(onnx_export, "export_graph", lambda *args: shutil.copyfile(other, args[5]))
    with pytest.raises(OnnxError, match="the exported graph's logits differs from the torch model's by .*; not "
                                        "written"):
        export(trained("text-classification"), tmp_path / "out", format="onnx")
    assert not list(tmp_path.iterdir())


def test_the_session_uses_torch_threads_and_every_optimization(exported):
    import onnxruntime as ort

    session = fk.load(exported("text-classification")).model.session
    options = session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads() == 1  # one_thread
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_folder_gets_the_usual_permissions(exported):
    mask = os.umask(0o022)
    os.umask(mask)
    assert exported("text-classification").stat().st_mode & 0o777 == 0o777 & ~mask


def test_bad_option_combinations_are_one_line(trained, exported, tmp_path):
    source = str(trained("text-classification"))
    out = str(tmp_path / "out")
    assert "--quantize" in one_line_error(runner.invoke(app, ["export", source, "--encoder", "--format", "onnx",
                                                              "--output", out]))
    assert "add --format onnx" in one_line_error(runner.invoke(app, ["export", source, "--quantize", "int8",
                                                                     "--output", out]))
    assert "'int4' is not one of int8" in one_line_error(runner.invoke(app, ["export", source, "--format", "onnx",
                                                                           "--quantize", "int4", "--output", out]))
    assert "--format: 'tflite'" in one_line_error(runner.invoke(app, ["export", source, "--format", "tflite",
                                                                      "--output", out]))
    onnx_dir = str(exported("text-classification"))
    assert "already an ONNX export" in one_line_error(runner.invoke(app, ["export", onnx_dir, "--format", "onnx",
                                                                          "--output", out]))
    assert "holds an ONNX model" in one_line_error(runner.invoke(app, ["export", onnx_dir, "--output", out]))
    assert not Path(out).exists()


def test_missing_onnx_packages_are_one_line(trained, exported, tmp_path, monkeypatch):
    source, onnx_dir = trained("text-classification"), exported("text-classification")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    line = one_line_error(runner.invoke(app, ["export", str(source), "--format", "onnx", "--output",
                                              str(tmp_path / "out")]))
    assert 'ONNX export needs onnxruntime, which is not installed; pip install "finetune-kit[onnx]"' in line
    with pytest.raises(OnnxError, match=r'an ONNX model needs onnxruntime.*pip install "finetune-kit\[onnx\]"'):
        fk.load(onnx_dir)


def test_the_server_runs_an_onnx_model_and_says_so(exported):
    from fastapi.testclient import TestClient

    from finetune_kit.serve import create_app

    predictor = fk.load(exported("text-classification"))
    with TestClient(create_app(predictor)) as client:
        assert client.get("/info").json()["backend"] == "onnxruntime"
        answer = client.post("/predict", json={"inputs": POSITIVE[:3]}).json()["predictions"]
    assert answer == predictor.predict(POSITIVE[:3])
