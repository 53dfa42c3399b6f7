"""finetune-kit: fine-tune pretrained encoders for NLP tasks in one clean training loop."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("finetune-kit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .onednn import limit_primitive_cache  # noqa: E402

limit_primitive_cache()  # before anything builds a oneDNN kernel

from .api import Predictor, TrainResult, evaluate, export, export_encoder, load, train  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .embeddings import embed  # noqa: E402
from .registry import available_tasks  # noqa: E402

__all__ = ["Predictor", "TrainConfig", "TrainResult", "available_tasks", "embed", "evaluate", "export",
           "export_encoder", "load", "train", "__version__"]
