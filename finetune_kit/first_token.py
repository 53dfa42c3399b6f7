"""The last encoder layer computed past its attention for the first token only, in task models
whose head reads nothing else.

A sequence-level head reads the last layer's output at the first position ([CLS] / <s>) only:
finetune-kit's ``cls`` and ``pooler`` heads, and the transformers heads of the architectures in
``FIRST_TOKEN_ARCHITECTURES`` (BERT's pooler, RoBERTa's dense + out_proj, DeBERTa-v2's context
pooler, ELECTRA's head; their multiple-choice heads read the same vector). The last layer's
keys and values still need every token, since the first token attends to all of them, but what
follows its attention (the output projection, the residual LayerNorm and the feed-forward block:
9 of the layer's 12 hidden-size-squared products per token, an eighth of a six-layer encoder's)
is spent on vectors nobody reads. Here it runs on the first position alone: the last layer's
attention-output module gets its inputs cut to the first position. What the head reads, and so
the logits, the loss and every gradient, is what the whole layer gives (up to summation order).

The cut applies only while the task model's own forward runs (a counter its forward hooks keep):
its encoder called on its own (embeddings, the start of another task) computes every token.
Nor does it apply while the last layer is checkpointed (transformers' gradient checkpointing,
FSDP's activation checkpointing wrapper), whose backward pass runs the layer again outside the
task model's forward and must get the shapes of the first run.
``FINETUNE_KIT_FIRST_TOKEN_ONLY=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

ENV_SWITCH = "FINETUNE_KIT_FIRST_TOKEN_ONLY"
# Architectures (``config.model_type``) whose layers are BERT's (attention -> output(context,
# residual) -> intermediate -> output) and whose transformers sequence-classification and
# multiple-choice heads read the first position only.
FIRST_TOKEN_ARCHITECTURES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta-v2"})


class FirstTokenOnly:
    """The hooks of one task model: ``active`` counts the task model's forwards in progress."""

    def __init__(self, model: nn.Module, layers: nn.ModuleList, attention_output: nn.Module) -> None:
        self.active = 0
        self.layers = layers  # the list, not its last layer: a checkpoint wrapper may replace that
        model.register_forward_pre_hook(self._enter)
        model.register_forward_hook(self._leave, always_call=True)
        attention_output.register_forward_pre_hook(self._first_position)

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.active += 1

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        self.active -= 1

    def _first_position(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.active or checkpointed(self.layers[-1]):
            return None
        # contiguous: the linear layers then take their one-product (addmm) path
        return tuple(arg[:, :1].contiguous() if isinstance(arg, torch.Tensor) and arg.dim() >= 2 else arg
                     for arg in args)


def checkpointed(layer: nn.Module) -> bool:
    """Whether ``layer`` runs under activation checkpointing: transformers' flag on its layers, or
    torch's checkpoint wrapper (what FSDP's ``activation_checkpointing`` puts around a layer)."""
    return any(getattr(module, "gradient_checkpointing", False) is True
               or type(module).__name__ == "CheckpointWrapper" for module in layer.modules())


def last_layer_attention_output(encoder: nn.Module) -> nn.Module | None:
    """The last layer's attention-output module (``BertSelfOutput`` and its copies), or None when
    the encoder is not one of ``FIRST_TOKEN_ARCHITECTURES`` or its last layer is built otherwise."""
    config = getattr(encoder, "config", None)
    if getattr(config, "model_type", None) not in FIRST_TOKEN_ARCHITECTURES:
        return None
    if getattr(config, "summary_type", "first") not in (None, "first"):  # ELECTRA's multiple-choice summary
        return None
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    last = layers[-1]
    if getattr(last, "crossattention", None) is not None or getattr(config, "is_decoder", False):
        return None
    output = getattr(getattr(last, "attention", None), "output", None)
    if not all(isinstance(m, nn.Module) for m in (output, getattr(last, "intermediate", None),
                                                   getattr(last, "output", None))):
        return None
    return output


def compute_first_token_only(model: nn.Module, encoder: nn.Module) -> FirstTokenOnly | None:
    """Cut ``encoder``'s last layer to the first position inside ``model``'s forward (see the
    module docstring); ``model`` must read nothing of the last layer but the first position.
    Returns the hooks, or None where the encoder's layers are not known to allow it or it is off."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    attention_output = last_layer_attention_output(encoder)
    if attention_output is None:
        return None
    return FirstTokenOnly(model, encoder.encoder.layer, attention_output)
