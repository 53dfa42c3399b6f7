"""ONNX Runtime as a predictor's backend: a model directory written by ``finetune-kit export
--format onnx`` holds ``model.onnx``, the graph of its transformers class's forward, and
``OnnxTaskModel`` calls it as the torch task model is called: with the collated batch, returning
the outputs under the names the torch model gives them (``logits``, ``start_logits``...). So
``inference.stream_outputs`` and every task's postprocessing run unchanged.

onnxruntime is imported only here, and only when an ONNX model is exported or loaded."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError
from .modeling import ModelDirError

ONNX_FILE = "model.onnx"
ONNX_EXTRA = 'pip install "finetune-kit[onnx]"'
BACKENDS = ("auto", "torch", "onnxruntime")
# The graph's inputs of a multiple-choice model are (batch, choices, length).
CHOICE_MASK = "choice_mask"
# What ONNX Runtime's type names are in numpy.
ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxError(ModelDirError):
    """A model that cannot be exported to ONNX or run with ONNX Runtime; the message says why."""


def require_packages(*modules: str, purpose: str) -> None:
    """Import the ONNX packages ``purpose`` needs (e.g. ``onnxruntime``); a missing one is an
    ``OnnxError`` naming the extra that installs them."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OnnxError(f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                        f"installed; {ONNX_EXTRA}")


def has_onnx_model(model_dir: str | Path) -> bool:
    return (Path(model_dir) / ONNX_FILE).is_file()


def resolve_backend(backend: str, model_dir: Path, onnx_only: bool) -> str:
    """The backend a predictor of ``model_dir`` runs on: ``auto`` is onnxruntime when the directory
    holds ``model.onnx``, else torch. ``onnx_only``: the directory has no torch weights."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    has_onnx = has_onnx_model(model_dir)
    if backend == "auto":
        return "onnxruntime" if has_onnx else "torch"
    if backend == "onnxruntime" and not has_onnx:
        raise OnnxError(f"{model_dir}: holds no {ONNX_FILE} to run with onnxruntime; write an ONNX copy with "
                        f"`finetune-kit export {model_dir} --format onnx --output DIR` and load DIR, or use the "
                        f"torch backend")
    if backend == "torch" and onnx_only:
        raise OnnxError(f"{model_dir}: holds an ONNX model only (no torch weights); load it with the onnxruntime "
                        f"backend (or auto), or load the model directory it was exported from with torch")
    return backend


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime's settings: as many intra-op threads as torch uses (its own default takes every
    core, also on a machine shared with other work), one inter-op thread (the graph is one chain),
    every graph optimization (constant folding, node fusions, layout changes), warnings off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def providers() -> list[str]:
    """CUDA when this onnxruntime has it and a GPU is there (onnxruntime-gpu), else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxTaskModel:
    """An ONNX Runtime session called like a torch task model: ``model(**batch)`` with the task's
    collated batch (its graph inputs taken from it, anything else, such as labels, left), returning
    a dict of CPU tensors named as the torch model's outputs. No loss: ``evaluate`` reports none.

    A multiple-choice graph reads (batch, choices, length); the batch's ``choice_mask`` marks the
    real choices, which run as one question of them all, as the torch model runs them, and the
    padded ones get a score of -inf."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        require_packages("onnxruntime", purpose="an ONNX model")
        import onnxruntime as ort

        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                                providers=providers())
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            text = " ".join(str(exc).split())[:300]
            raise OnnxError(f"{self.path}: onnxruntime cannot load it ({text}); export the model again") from None
        self.inputs = {i.name: ORT_INT_TYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.choices = len(self.session.get_inputs()[0].shape) == 3
        self.training = False

    def eval(self) -> OnnxTaskModel:
        return self

    def __call__(self, **batch: Any) -> dict[str, torch.Tensor]:
        choice_mask = batch.get(CHOICE_MASK) if self.choices else None
        input_ids = batch["input_ids"]
        feeds = {}
        for name, dtype in self.inputs.items():
            value = batch.get(name)
            if value is None:  # the model's own default: every token attended, one segment
                value = torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
            if choice_mask is not None:
                value = value[choice_mask.to(value.device)].unsqueeze(0)
            feeds[name] = value.detach().cpu().numpy().astype(dtype, copy=False)
        arrays = self.session.run(self.output_names, feeds)
        outputs = {name: torch.from_numpy(np.asarray(array)) for name, array in zip(self.output_names, arrays)}
        if choice_mask is not None:
            mask = choice_mask.cpu()
            outputs = {name: torch.full(mask.shape, float("-inf"), dtype=value.dtype)
                       .masked_scatter(mask, value.reshape(-1)) for name, value in outputs.items()}
        return outputs
