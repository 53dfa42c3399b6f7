"""What task heads share: their dropout, taken from the encoder's own configuration, and the
architecture's own transformers heads built around a pretrained encoder."""

from __future__ import annotations

from typing import Any

from .modeling import drop_pooler


def head_dropout(config: Any, default: float = 0.1) -> float:
    """The dropout of a task head: the encoder's own (``hidden_dropout_prob`` in BERT-style
    configs, ``dropout`` in DistilBERT's), else ``default``. An encoder set to 0 keeps 0."""
    for name in ("hidden_dropout_prob", "dropout"):
        value = getattr(config, name, None)
        if value is not None:
            return float(value)
    return default


def has_transformers_head(auto_class: Any, config: Any) -> bool:
    """Whether transformers' ``auto_class`` has a class for the architecture of ``config``: not for
    an encoder whose code ships with the model (``trust_remote_code``), whose task classes, if any,
    would be more of its code to run. A task falls back to its own head then."""
    return type(config) in auto_class._model_mapping


def transformers_model(auto_class: Any, encoder: Any, **config_changes: Any) -> Any:
    """The encoder's architecture with its own transformers head (``auto_class``, e.g.
    ``AutoModelForSequenceClassification``: BERT's pooler + dropout + linear, RoBERTa's dense +
    tanh + out_proj, ...): built from the encoder's configuration updated with ``config_changes``
    (e.g. ``id2label``), with ``encoder`` and its pretrained weights as its base model and a newly
    initialised head. Saved with ``save_pretrained``, it is what that class loads.

    The encoder's pooler is dropped when the architecture's head does not read it; a head that
    does read it takes the encoder's pretrained one (loaded with ``TaskBase.uses_pooler``), or a
    newly initialised one when the encoder has none (one saved without it, e.g. after masked-LM
    training), as ``from_pretrained`` gives a checkpoint without pooler weights."""
    import copy

    config = copy.deepcopy(encoder.config)
    for key, value in config_changes.items():
        setattr(config, key, value)
    model = auto_class.from_config(config)
    prefix = model.base_model_prefix
    own_base = getattr(model, prefix)
    if hasattr(own_base, "pooler") and own_base.pooler is None:
        drop_pooler(encoder)
    elif getattr(own_base, "pooler", None) is not None and getattr(encoder, "pooler", None) is None:
        encoder.pooler = own_base.pooler
    encoder.config = model.config  # one configuration, the one save_pretrained writes
    setattr(model, prefix, encoder)
    model.tie_weights()  # an output layer tied to the input embeddings now ties to the encoder's
    return model


def head_module_names(model: Any) -> tuple[str, ...]:
    """The top-level modules of a transformers task model besides its base model that hold
    weights: its head (``classifier``; ``cls`` for masked LM; ``qa_outputs``...)."""
    prefix = model.base_model_prefix
    return tuple(name for name, module in model.named_children()
                 if name != prefix and any(True for _ in module.parameters()))
