"""Trained model directories read back: the task as it was set up, the task model with its
weights (or its LoRA adapter on the base encoder), and the encoder inside, which any task can
start from (``load_encoder`` takes a pretrained encoder or a finetune-kit model directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .adapters import AdapterError, is_peft_model, load_adapter, merge_adapter
from .first_token import compute_first_token_only
from .hub import HubUnreachableError
from .modeling import (
    MANIFEST,
    Manifest,
    ModelDirError,
    drop_pooler,
    encoder_from_config,
    load_pretrained_encoder,
    load_tokenizer,
    load_weights,
    one_line,
    read_manifest,
    resolve_model_path,
)
from .registry import get_task_class
from .task import Task, TaskSettings


def task_settings(config: dict[str, Any], task_class: type[Task]) -> TaskSettings:
    """The task's view of a run's settings; a column left unset takes the task's default
    (``default_columns``, e.g. ``tokens``/``tags`` for tagging), else TaskSettings' own."""
    defaults = {**{f: getattr(TaskSettings, f) for f in ("text_column", "text_pair_column", "label_column")},
                **task_class.default_columns}
    return TaskSettings(
        **{column: config.get(column) or default for column, default in defaults.items()},
        max_length=config.get("max_length") or task_class.default_max_length,
        options=dict(config.get("task_options") or {}),
        seed=int(config.get("seed", TaskSettings.seed)),
    )


def saved_task_model(model_dir: Path, manifest: Manifest, task: Task, trust: bool) -> nn.Module:
    """The trained model of a directory: full weights, or the base encoder's pretrained weights
    with the saved LoRA adapter and heads."""
    keep_pooler = task.uses_pooler
    if not manifest.config.get("lora"):
        encoder = encoder_from_config(model_dir, trust, keep_pooler=keep_pooler)
        model = task.build_model(encoder)
        load_weights(model, model_dir)
        return first_token_only_where_read(task, model, encoder)
    base = manifest.base_model
    try:
        encoder = load_encoder(base, trust, keep_pooler=keep_pooler)
    except (OSError, HubUnreachableError) as exc:
        reason = one_line(exc)[:200]
        raise ModelDirError(f"{model_dir}: holds a LoRA adapter whose base encoder {base!r} cannot be "
                            f"loaded ({reason})") from None
    try:
        model = load_adapter(task.build_model(encoder), model_dir)
    except AdapterError as exc:
        raise ModelDirError(str(exc)) from None
    return first_token_only_where_read(task, model, encoder)


def first_token_only_where_read(task: Task, model: nn.Module, encoder: nn.Module) -> nn.Module:
    """``model``, its encoder's last layer cut to the first position in its forward where the
    task's head reads no other (``first_token``)."""
    if task.reads_first_token_only:
        compute_first_token_only(model, encoder)
    return model


def saved_encoder(model_dir: str | Path, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """The encoder inside a trained model directory (LoRA updates merged into it), so that any
    finetune-kit model, a masked-LM one above all, is a starting point for another task."""
    from transformers import PreTrainedModel

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    task_class = get_task_class(manifest.task)
    task = task_class(task_settings(manifest.config, task_class))
    task.load_state(manifest.task_state, load_tokenizer(str(model_dir), trust_remote_code))
    model = saved_task_model(model_dir, manifest, task, trust_remote_code)
    if is_peft_model(model):
        model = merge_adapter(model)
    # the first transformers model: a transformers task model (its base model is the encoder), or
    # the encoder inside a finetune-kit head
    encoder = next(m for m in model.modules() if isinstance(m, PreTrainedModel)).base_model
    # an encoder saved without its pooler comes without one even when asked for: the next task's
    # head decides (``pooling=pooler`` refuses it; a transformers head that reads one makes a new one)
    return encoder if keep_pooler else drop_pooler(encoder)


def load_encoder(name: str, trust_remote_code: bool = False, keep_pooler: bool = False) -> nn.Module:
    """A pretrained encoder (the base model, no task head; its pooler only if asked for), or
    the encoder inside a finetune-kit model directory (after masked-LM pretraining, or a model of
    another task)."""
    path = resolve_model_path(name)
    if (Path(path) / MANIFEST).is_file():
        return saved_encoder(path, trust_remote_code, keep_pooler)
    return load_pretrained_encoder(name, trust_remote_code, keep_pooler)
