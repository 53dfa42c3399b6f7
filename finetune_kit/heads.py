"""What task heads share: their dropout, taken from the encoder's own configuration."""

from __future__ import annotations

from typing import Any


def head_dropout(config: Any, default: float = 0.1) -> float:
    """The dropout of a task head: the encoder's own (``hidden_dropout_prob`` in BERT-style
    configs, ``dropout`` in DistilBERT's), else ``default``. An encoder set to 0 keeps 0."""
    for name in ("hidden_dropout_prob", "dropout"):
        value = getattr(config, name, None)
        if value is not None:
            return float(value)
    return default
