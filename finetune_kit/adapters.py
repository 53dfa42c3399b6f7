"""Partial fine-tuning: LoRA adapters (peft) and frozen encoder parts.

Under LoRA the encoder keeps its pretrained weights; low-rank updates go into the linear layers
of its transformer blocks, and the task's head modules (``Task.head_modules``) train fully as
peft ``modules_to_save``. A LoRA model directory holds the adapter (LoRA weights and heads, in
``adapter_model.safetensors``) with the encoder config, tokenizer and manifest; loading builds
the pretrained encoder named in the manifest and applies the adapter, checking that every saved
tensor found its place and every trained one was saved.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Names peft gives the modules and tensors it adds.
ADAPTER_MARKERS = ("lora_", "modules_to_save")


class AdapterError(ValueError):
    """LoRA or freezing settings that do not fit the model; the message says which."""


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is LoRA-wrapped; never imports peft, so plain models work without it."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def module_name(model: nn.Module, target: nn.Module) -> str:
    """The dotted name of ``target`` inside ``model``."""
    for name, module in model.named_modules():
        if module is target:
            return name
    raise AdapterError(f"{type(target).__name__} is not part of {type(model).__name__}")


def layer_stack(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of transformer blocks (``encoder.layer`` in BERT, RoBERTa, DeBERTa and
    ELECTRA, ``transformer.layer`` in DistilBERT): the module list as long as the layer count."""
    config = encoder.config
    count = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise AdapterError(f"cannot find the {count} transformer layers of {type(encoder).__name__}")


def embedding_module(encoder: nn.Module) -> nn.Module:
    embeddings = getattr(encoder, "embeddings", None)
    return embeddings if isinstance(embeddings, nn.Module) else encoder.get_input_embeddings()


def trained_layers(encoder: nn.Module, top_layers: int | None) -> range:
    """Indices of the transformer blocks that train: all, or the top ``top_layers``."""
    _, layers = layer_stack(encoder)
    if top_layers is None:
        return range(len(layers))
    if top_layers > len(layers):
        raise AdapterError(f"train_top_layers: {top_layers} is more than the encoder's {len(layers)} layers")
    return range(len(layers) - top_layers, len(layers))


def freeze(model: nn.Module, encoder: nn.Module, freeze_embeddings: bool, top_layers: int | None) -> None:
    """Stop gradients to the embeddings and to the layers below the top ``top_layers``.

    Training only the top layers freezes the embeddings too: they sit below every layer.
    """
    frozen: list[nn.Module] = []
    if freeze_embeddings or top_layers is not None:
        frozen.append(embedding_module(encoder))
    if top_layers is not None:
        _, layers = layer_stack(encoder)
        keep = trained_layers(encoder, top_layers)
        frozen.extend(layer for index, layer in enumerate(layers) if index not in keep)
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)


def lora_targets(model: nn.Module, encoder: nn.Module, names: Iterable[str] | None,
                 top_layers: int | None) -> list[str]:
    """Full names (in ``model``) of the linear layers that get adapters: those of the trained
    transformer blocks whose own name is in ``names``, or all of them when ``names`` is None."""
    prefix = module_name(model, encoder)
    stack_name, layers = layer_stack(encoder)
    wanted = set(names) if names is not None else None
    targets, seen = [], set()
    for index in trained_layers(encoder, top_layers):
        for name, module in layers[index].named_modules():
            if not isinstance(module, nn.Linear):
                continue
            leaf = name.rsplit(".", 1)[-1]
            seen.add(leaf)
            if wanted is None or leaf in wanted:
                targets.append(".".join(p for p in (prefix, stack_name, str(index), name) if p))
    missing = sorted((wanted or set()) - seen)
    if missing:
        raise AdapterError(f"lora_target_modules: {', '.join(missing)} not found in the encoder's layers "
                           f"(its linear layers: {', '.join(sorted(seen))})")
    return targets


def apply_lora(model: nn.Module, encoder: nn.Module, head_modules: Iterable[str], *, r: int, alpha: float,
               dropout: float, target_modules: Iterable[str] | None = None, top_layers: int | None = None,
               base_model: str | None = None) -> nn.Module:
    """Wrap the task model with LoRA adapters in the encoder and its heads as modules_to_save."""
    from peft import LoraConfig, get_peft_model

    heads = list(head_modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
        target_modules=lora_targets(model, encoder, target_modules, top_layers),
        modules_to_save=heads or None,
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_model  # recorded in adapter_config.json
    check_heads_trainable(peft_model, module_name(peft_model, encoder), heads)
    return peft_model


def check_heads_trainable(model: nn.Module, encoder_prefix: str, heads: list[str]) -> None:
    """Every weight outside the encoder must belong to a declared head: an undeclared module
    would stay at its random initialisation under LoRA and be lost on saving."""
    for name, param in model.named_parameters():
        if name.startswith(encoder_prefix + ".") or "original_module" in name or param.requires_grad:
            continue
        raise AdapterError(f"{name} is outside the encoder but not among the task's head_modules "
                           f"({', '.join(heads) or 'none'}); the task plugin must declare it")


def adapter_state(model: nn.Module, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tensors a LoRA model directory saves: adapters and heads."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=state_dict)


def save_adapter_config(model: nn.Module, directory: Path) -> None:
    model.peft_config["default"].save_pretrained(str(directory))


def load_adapter_weights(model: nn.Module, model_dir: str | Path) -> None:
    """Load saved adapter and head tensors into a LoRA-wrapped model, strictly."""
    from peft import set_peft_model_state_dict

    path = Path(model_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise AdapterError(f"{path}: adapter weights not found")
    saved = load_file(path)
    result = set_peft_model_state_dict(model, saved)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if any(m in k for m in ADAPTER_MARKERS) and "original_module" not in k]
    if unexpected or missing:
        raise AdapterError(f"{path}: adapter does not match the model (missing: {', '.join(missing[:5]) or 'none'}; "
                           f"unexpected: {', '.join(unexpected[:5]) or 'none'})")


def load_adapter(model: nn.Module, model_dir: str | Path) -> nn.Module:
    """Wrap a task model (encoder with pretrained weights) with the saved adapter of ``model_dir``."""
    from peft import LoraConfig, get_peft_model

    path = Path(model_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterError(f"{path}: adapter config not found")
    config = LoraConfig.from_pretrained(str(model_dir))
    base, config.base_model_name_or_path = config.base_model_name_or_path, None
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base
    load_adapter_weights(peft_model, model_dir)
    return peft_model


def merge_adapter(model: nn.Module) -> nn.Module:
    """The plain task model with LoRA updates merged into the encoder's weights and the trained
    heads in place of the wrappers: it runs and saves without peft."""
    return model.merge_and_unload()
