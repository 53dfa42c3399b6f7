"""``finetune-kit export --format onnx``: a trained model directory as an ONNX model directory.

The graph is the forward of the model's transformers class (``BertForSequenceClassification``,
``...ForTokenClassification``, ``...ForQuestionAnswering``, ``...ForMultipleChoice``), exported by
torch's own exporter (``torch.onnx.export``, the ``torch.export``-based one) with the batch, the
sequence length (and the number of choices) dynamic; a LoRA adapter is merged first. Heads of
finetune-kit's own (span NER, the CRF tagger, the ``cls``/``mean``/``pooler`` classifiers) and
the masked-LM task's forward are not a transformers class's graph, and are refused.

The output directory is a model directory that ``load``, ``predict``, ``evaluate`` and ``serve``
read (``onnx_runtime.OnnxTaskModel`` runs it): ``model.onnx``, config.json, the tokenizer and the
manifest (its ``onnx`` entry: inputs, outputs, opset, quantization), no torch weights. It is
written into a hidden sibling folder, checked against the torch model there, and renamed into
place: it appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .batching import MODEL_INPUTS
from .modeling import MANIFEST, Manifest, load_tokenizer, package_versions, read_manifest
from .onnx_runtime import ONNX_FILE, OnnxError, OnnxTaskModel, require_packages
from .output_dir import OutputDirError
from .registry import get_task_class
from .saved_models import saved_task_model, task_settings

# The transformers heads whose forward is what the tasks read (``logits``, ``start_logits`` and
# ``end_logits``), by the ending of their class name.
EXPORTABLE_HEADS = {
    "ForSequenceClassification": "sequence classification",
    "ForTokenClassification": "token classification",
    "ForQuestionAnswering": "question answering",
    "ForMultipleChoice": "multiple choice",
}
QUANTIZATIONS = ("int8",)
# The exported graph's outputs may differ from the torch model's by rounding only.
TOLERANCE = 1e-3
# Above this many bytes of weights, the graph keeps them in a file beside it (protobuf's 2 GB limit).
SINGLE_FILE_BYTES = 1_500_000_000
# Texts the sample inputs of the export are made of: two lengths, so the mask has padding; pairs,
# so that the token types have both segments.
SAMPLE = [("the first sample text, a little longer than the others", "and the second text of its pair"),
          ("a second sample", "its pair"), ("the third one", "with a pair as well, somewhat longer")]
# int8: the encoder layers' matrix products with int8 weights (one scale per output channel) and
# int8 activations with one scale per token, found as they come (symmetric: the token's largest
# |value| is 127; stored as uint8 around 128, the form onnxruntime's integer kernels take). One
# scale per token, not per batch, because a few tokens ([CLS], [SEP], punctuation) carry values 10
# times the others', which would otherwise set every token's step. Embeddings, layer norms,
# softmax, attention's own products and the task head (pooler, classifier, QA span scorer: a
# sliver of the arithmetic whose rounding moves the scores directly) stay fp32.
INT8_SETTINGS = {"method": "dynamic", "weights": "int8, per output channel", "activations": "int8, per token",
                 "op": "com.microsoft.MatMulIntegerToFloat", "scope": "encoder layers"}
# The torch module path of a transformer layer (``bert.encoder.layer.3.``, ``distilbert.transformer.layer.0.``),
# read from the name scopes the exporter records on each ONNX node.
ENCODER_LAYER_SCOPE = re.compile(r"\.layers?\.\d+\.")


def export_onnx(model_dir: str | Path, output_dir: str | Path, quantize: str | None = None,
                trust_remote_code: bool = False) -> Path:
    """Write the model of ``model_dir`` as an ONNX model directory at ``output_dir`` (which must
    not exist or be empty); ``quantize="int8"``: its matrix products with int8 weights."""
    output_dir = Path(output_dir)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise OnnxError(f"quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OutputDirError(f"{output_dir}: exists and is not empty; choose another directory")
    require_packages("onnxruntime", "onnx", "onnxscript", purpose="ONNX export")
    source = read_manifest(model_dir)
    if source.onnx is not None:
        raise OnnxError(f"{model_dir}: is already an ONNX export; export the model directory it was made from")
    task_class = get_task_class(source.task)
    task = task_class(task_settings(source.config, task_class))
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code)
    task.load_state(source.task_state, tokenizer)
    model = exportable_model(saved_task_model(Path(model_dir), source, task, trust_remote_code), source.task)
    choices = class_name(model).endswith("ForMultipleChoice")
    inputs = graph_inputs(model, tokenizer)
    samples = [sample_inputs(tokenizer, inputs, rows, choices) for rows in (2, 3)]
    outputs = output_names(model, samples[0])

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        large = sum(p.numel() * p.element_size() for p in model.parameters()) > SINGLE_FILE_BYTES
        graph = staging / (f"fp32-{ONNX_FILE}" if quantize else ONNX_FILE)
        export_graph(model, samples[0], inputs, outputs, choices, graph, large)
        simplify_graph(graph, large)
        difference = check_graph(model, graph, samples, outputs)
        record: dict[str, Any] = {"file": ONNX_FILE, "exporter": f"torch.onnx (dynamo) {torch.__version__}",
                                  "opset": graph_opset(graph), "inputs": inputs, "outputs": outputs,
                                  "dynamic_axes": ["batch", *(["choices"] if choices else []), "sequence"],
                                  "max_abs_diff_fp32": difference, "quantization": None}
        if quantize == "int8":
            quantize_int8(graph, staging / ONNX_FILE, large)
            record["quantization"] = dict(INT8_SETTINGS)
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = Manifest(task=source.task, task_state=source.task_state, config={**source.config, "lora": False},
                            base_model=source.base_model, versions={**package_versions(), **onnx_versions()},
                            transformers_class=class_name(model), onnx=record)
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's folder is the owner's alone
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def class_name(model: nn.Module) -> str:
    return type(model).__name__


def exportable_model(model: nn.Module, task: str) -> nn.Module:
    """The plain transformers model to export (a LoRA adapter merged into a copy), or an
    ``OnnxError`` naming the task and what its model is."""
    from transformers import PreTrainedModel

    from .adapters import is_peft_model, merge_adapter

    base = model.get_base_model() if is_peft_model(model) else model
    heads = ", ".join(EXPORTABLE_HEADS.values())
    if not isinstance(base, PreTrainedModel):
        what = class_name(base) + (", with a CRF decoded by Viterbi" if getattr(base, "crf", None) is not None else "")
        raise OnnxError(f"{task}: its model ({what}) is finetune-kit's own head, not a transformers AutoModelFor* "
                        f"class; ONNX export takes those only ({heads}): use this model with torch")
    if not class_name(base).endswith(tuple(EXPORTABLE_HEADS)):
        raise OnnxError(f"{task}: its model ({class_name(base)}) is not one of the transformers heads ONNX export "
                        f"takes ({heads}); export its encoder with `finetune-kit export DIR --encoder` instead")
    if is_peft_model(model):
        base = merge_adapter(copy.deepcopy(model))
    return base.to("cpu").float().eval()


def graph_inputs(model: nn.Module, tokenizer: Any) -> list[str]:
    """The encoder inputs the tokenizer makes that the model's class reads, in ``MODEL_INPUTS`` order."""
    import inspect

    accepted = inspect.signature(type(model).forward).parameters
    made = set(getattr(tokenizer, "model_input_names", MODEL_INPUTS)) | {"input_ids", "attention_mask"}
    return [name for name in MODEL_INPUTS if name in made and name in accepted]


def sample_inputs(tokenizer: Any, inputs: list[str], rows: int, choices: bool) -> dict[str, torch.Tensor]:
    """A padded batch of ``rows`` sample pairs; for a multiple-choice model (rows, 2, length)."""
    firsts, seconds = zip(*SAMPLE[:rows])
    encoded = tokenizer(list(firsts), list(seconds), padding=True, return_tensors="pt")
    batch = {name: encoded[name] if name in encoded else torch.zeros_like(encoded["input_ids"]) for name in inputs}
    if choices:
        batch = {name: torch.stack([value, value.roll(1, dims=0)], dim=1) for name, value in batch.items()}
    return batch


def class_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the model's class's forward (not a task's forward set on the instance)."""
    with torch.no_grad():
        output = type(model).forward(model, **batch)
    return {k: v for k, v in output.items() if k != "loss" and isinstance(v, torch.Tensor)}


def output_names(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
    return list(class_outputs(model, batch))


class ClassForward(nn.Module):
    """The transformers class's forward of ``model`` with named inputs, its outputs as a tuple."""

    def __init__(self, model: nn.Module, outputs: list[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        output = type(self.model).forward(self.model, **{k: v for k, v in given.items() if v is not None})
        return tuple(output[name] for name in self.outputs)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines, warnings and log records kept off the console."""
    # the root logger: onnxruntime's quantization logs its advice there
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript", None)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, \
                contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_graph(model: nn.Module, sample: dict[str, torch.Tensor], inputs: list[str], outputs: list[str],
                 choices: bool, path: Path, large: bool = False) -> None:
    """Export the class's forward to ``path``; ``large``: the weights in a file beside it (``NAME.data``)."""
    axes = {0: "batch", 1: "choices", 2: "sequence"} if choices else {0: "batch", 1: "sequence"}
    try:
        with quiet_exporter():
            program = torch.onnx.export(
                ClassForward(model, outputs), (), kwargs=sample, dynamo=True, verbose=False,
                input_names=inputs, output_names=outputs, dynamic_shapes={name: axes for name in inputs},
                optimize=True, external_data=large,
            )
            program.save(str(path), external_data=large)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; one line says which
        text = " ".join(str(exc).split())[:300]
        raise OnnxError(f"{class_name(model)}: torch.onnx.export failed ({type(exc).__name__}: {text})") from None


def check_graph(model: nn.Module, path: Path, samples: list[dict[str, torch.Tensor]], outputs: list[str]) -> float:
    """Run the graph with onnxruntime on batches of two shapes and compare it with the torch model;
    returns the largest absolute difference. A graph that gives other outputs (e.g. shapes that the
    export fixed) is an ``OnnxError``."""
    session = OnnxTaskModel(path)
    largest = 0.0
    for batch in samples:
        expected = class_outputs(model, batch)
        got = session(**batch)
        for name in outputs:
            if got[name].shape != expected[name].shape:
                raise OnnxError(f"{path}: the exported graph's {name} has shape {tuple(got[name].shape)}, the "
                                f"torch model's {tuple(expected[name].shape)}; not written")
            difference = float((got[name] - expected[name]).abs().max())
            if not np.isfinite(difference) or difference > TOLERANCE * (1 + float(expected[name].abs().max())):
                raise OnnxError(f"{path}: the exported graph's {name} differs from the torch model's by "
                                f"{difference:.3g}; not written")
            largest = max(largest, difference)
    return largest


def graph_opset(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(int(entry.version) for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def drop_softmax_nan_guards(graph: Any) -> int:
    """Remove the exporter's ``Where(IsNaN(p), 0, p)`` after each attention softmax, returning how many.

    torch's SDPA decomposition guards against rows whose every score is -inf (softmax gives NaN
    there). transformers' masks fill with the dtype's lowest finite value, never -inf, so the guard
    cannot fire, and onnxruntime's broadcasting ``Where`` over the (batch, heads, length, length)
    scores took a quarter of the int8 graph's time. With a -inf constant anywhere in the graph the
    guards stay."""
    from onnx import numpy_helper

    constants = list(graph.graph.initializer) + [attr.t for node in graph.graph.node if node.op_type == "Constant"
                                                 for attr in node.attribute if attr.name == "value"]
    if any(np.isneginf(numpy_helper.to_array(c)).any() for c in constants
           if c.data_type in (1, 10, 11, 16) and not c.external_data):  # float, fp16, double, bf16
        return 0
    nodes = list(graph.graph.node)
    producer = {output: node for node in nodes for output in node.output}
    readers = Counter(name for node in nodes for name in node.input)
    outputs = {output.name for output in graph.graph.output}
    rename, dropped = {}, set()
    for node in nodes:
        if node.op_type != "Where" or node.output[0] in outputs:
            continue
        condition, value = producer.get(node.input[0]), producer.get(node.input[2])
        if condition is not None and condition.op_type == "IsNaN" and condition.input[0] == node.input[2] \
                and readers[node.input[0]] == 1 and value is not None and value.op_type == "Softmax":
            rename[node.output[0]] = node.input[2]
            dropped.update((id(node), id(condition)))
    replace_nodes(graph, [node for node in nodes if id(node) not in dropped], rename)
    return len(rename)


def replace_nodes(graph: Any, nodes: list[Any], rename: dict[str, str] | None = None) -> None:
    """Make ``nodes`` (in that order) the graph's nodes, their inputs renamed by ``rename``."""
    import onnx

    copies = []
    for node in nodes:
        copy_ = onnx.NodeProto()
        copy_.CopyFrom(node)
        for i, name in enumerate(copy_.input):
            copy_.input[i] = (rename or {}).get(name, name)
        copies.append(copy_)
    del graph.graph.node[:]
    graph.graph.node.extend(copies)


def simplify_graph(path: Path, large: bool = False) -> None:
    """Rewrite the exported graph at ``path`` without what cannot change its outputs
    (``drop_softmax_nan_guards``)."""
    import onnx

    graph = onnx.load(str(path))
    if drop_softmax_nan_guards(graph):
        save_graph(graph, path, large)


def remove_graph(path: Path) -> None:
    """Delete the graph at ``path`` and its weights file (``NAME.data``), if any."""
    for leftover in path.parent.glob(f"{path.name}*"):
        leftover.unlink()


def save_graph(graph: Any, path: Path, large: bool = False) -> None:
    import onnx

    remove_graph(path)
    onnx.save(graph, str(path), save_as_external_data=large, location=f"{path.name}.data")


def quantize_int8(fp32: Path, path: Path, large: bool = False) -> None:
    """Write the int8 graph (``INT8_SETTINGS``) of the graph at ``fp32`` to ``path``, and remove
    the fp32 graph (with its weights file, if any).

    Each activation that feeds encoder-layer products is quantized once (query, key and value
    share theirs): ``q = uint8(x / s + 128.5)`` with ``s = max|x| / 127`` over the token's hidden
    vector. Each product is ``MatMulIntegerToFloat(q, W8, 1, w_scale, 128) * s``: the integer
    product with the weights' per-channel scales applied, then the token's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = onnx.load(str(fp32))
    weights = {init.name: init for init in graph.graph.initializer}
    products: dict[str, list[Any]] = {}  # activation name -> the products that read it
    all_nodes = list(graph.graph.node)
    for node in encoder_layer_products(all_nodes):
        if node.input[1] in weights \
                and len(weights[node.input[1]].dims) == 2 and weights[node.input[1]].data_type == TensorProto.FLOAT:
            products.setdefault(node.input[0], []).append(node)
    if not products:
        raise OnnxError(f"{fp32.name}: no matrix product of an encoder layer found to quantize")

    def constant(name: str, value: np.ndarray) -> str:
        graph.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    axes, per_step, eps = (constant("int8_axes", np.array([-1], np.int64)),
                           constant("int8_per_step", np.array(1 / 127, np.float32)),
                           constant("int8_eps", np.array(1e-12, np.float32)))
    offset, zero_point, one = (constant("int8_offset", np.array(128.5, np.float32)),
                               constant("int8_zero_point", np.array(128, np.uint8)),
                               constant("int8_one", np.array(1.0, np.float32)))
    before: dict[int, list[Any]] = {}  # id(node) -> the nodes that go before it
    for activation, readers in products.items():
        p = f"int8/{activation}"
        quantize = [
            helper.make_node("Abs", [activation], [f"{p}/abs"], name=f"{p}/abs"),
            helper.make_node("ReduceMax", [f"{p}/abs", axes], [f"{p}/max"], keepdims=1, name=f"{p}/max"),
            helper.make_node("Mul", [f"{p}/max", per_step], [f"{p}/step0"], name=f"{p}/step0"),
            helper.make_node("Max", [f"{p}/step0", eps], [f"{p}/step"], name=f"{p}/step"),
            helper.make_node("Reciprocal", [f"{p}/step"], [f"{p}/inverse"], name=f"{p}/inverse"),
            helper.make_node("Mul", [activation, f"{p}/inverse"], [f"{p}/scaled"], name=f"{p}/scaled"),
            helper.make_node("Add", [f"{p}/scaled", offset], [f"{p}/shifted"], name=f"{p}/shifted"),
            helper.make_node("Cast", [f"{p}/shifted"], [f"{p}/q"], to=TensorProto.UINT8, name=f"{p}/q"),
        ]
        before.setdefault(id(readers[0]), []).extend(quantize)
        for node in readers:
            weight = numpy_helper.to_array(weights[node.input[1]])
            scale = np.maximum(np.abs(weight).max(axis=0), 1e-12).astype(np.float32) / 127
            w8 = constant(f"{node.input[1]}/int8", np.clip(np.round(weight / scale), -127, 127).astype(np.int8))
            w_scale = constant(f"{node.input[1]}/scale", scale)
            before.setdefault(id(node), []).extend([
                helper.make_node("MatMulIntegerToFloat", [f"{p}/q", w8, one, w_scale, zero_point],
                                 [f"{node.output[0]}/int8"], name=f"{node.name}/int8", domain="com.microsoft"),
                helper.make_node("Mul", [f"{node.output[0]}/int8", f"{p}/step"], [node.output[0]],
                                 name=f"{node.name}/step"),
            ])
    replaced = {id(node) for readers in products.values() for node in readers}
    nodes = []
    for node in all_nodes:
        nodes.extend(before.get(id(node), []))
        if id(node) not in replaced:
            nodes.append(node)
    replace_nodes(graph, nodes)
    fp32_weights = {node.input[1] for readers in products.values() for node in readers}
    for i in reversed(range(len(graph.graph.initializer))):
        if graph.graph.initializer[i].name in fp32_weights:
            del graph.graph.initializer[i]
    if not any(entry.domain == "com.microsoft" for entry in graph.opset_import):
        graph.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save_graph(graph, path, large)
    remove_graph(fp32)


def encoder_layer_products(nodes: list[Any]) -> list[Any]:
    """The ``MatMul`` nodes that torch's exporter recorded inside a transformer layer of the encoder
    (its ``pkg.torch.onnx.name_scopes``): what int8 quantizes."""
    chosen = []
    for node in nodes:
        if node.op_type == "MatMul":
            scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
            if ENCODER_LAYER_SCOPE.search(scopes):
                chosen.append(node)
    return chosen


def onnx_versions() -> dict[str, str]:
    out = {}
    for dist in ("onnx", "onnxruntime", "onnxscript"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def describe(model_dir: str | Path) -> str:
    """One line on an ONNX model directory's graph, for the command line."""
    record = read_manifest(model_dir).onnx or {}
    quantization = record.get("quantization")
    kind = "int8 (per-token dynamic quantization)" if quantization else "fp32"
    return f"{kind}, opset {record.get('opset')}, inputs {', '.join(record.get('inputs', []))}"

