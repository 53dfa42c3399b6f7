"""The embedding matrices' gradients kept in buffers that live across training steps, on the CPU.

Torch's embedding backward allocates a zero gradient the size of the whole matrix at every step
and adds the batch's rows into it (30522 x 384 fp32 for a BERT-sized vocabulary: 45 MiB). Above
glibc's mmap threshold (32 MiB at most) each such allocation is a fresh mapping, freed again when
the optimizer's ``zero_grad`` drops the gradient, so every step pays a page fault per 4 KiB of it:
zeroing 45 MiB of fresh pages took 12 ms where zeroing the same memory again took 1, and in a
profiled SST-2 / WNUT-17 training step in bf16 that ``fill_`` was 11-14% of the step (31-35 ms;
``benchmarks/README.md``). The rows a batch touches are a few hundred of 30k.

``kept_embedding_gradients`` routes each trainable ``nn.Embedding``'s lookup through a function
whose backward adds the batch's rows into a buffer that lives across steps: when the parameter has
no gradient (the optimizer set it to None), the buffer is zeroed and becomes its gradient; when it
has one (gradient accumulation), the rows are added to it. The gradient is torch's to the bit:
the batch's rows are summed per id in the batch's order, then added to the gradient, as torch's
backward and its accumulation do; ``padding_idx`` is left out. A weight shared with another module
(an output layer tied to the word embeddings, as in masked-LM heads) keeps torch's lookup: autograd
sums its two gradients before accumulating them, an order the buffer could not keep.

The buffer is written outside autograd's accumulation of that parameter, which distributed
wrappers (DDP, FSDP, DeepSpeed) hook into to reduce gradients across processes: so only
single-process training on the CPU uses it (GPUs' caching allocators reuse memory already).
Embeddings with ``max_norm``, ``scale_grad_by_freq`` or sparse gradients keep torch's lookup.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_tensors import is_plain_cpu


class KeptGradient:
    """One embedding's gradient buffer, made at the first backward and reused after."""

    def __init__(self, embedding: nn.Embedding) -> None:
        self.embedding = embedding
        self.buffer: torch.Tensor | None = None

    def add_rows(self, ids: torch.Tensor, grad_output: torch.Tensor) -> None:
        weight = self.embedding.weight
        if weight.grad is None:
            if self.buffer is None:
                self.buffer = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            else:
                self.buffer.zero_()
            weight.grad = self.buffer
        ids = ids.reshape(-1)
        rows = grad_output.reshape(-1, grad_output.shape[-1]).to(weight.grad.dtype)
        padding_idx = self.embedding.padding_idx
        if padding_idx is not None:
            kept = ids != padding_idx
            ids, rows = ids[kept], rows[kept]
        # The batch's rows summed per id first, then added: the order torch's own accumulation adds in.
        unique, position = torch.unique(ids, return_inverse=True)
        summed = rows.new_zeros(len(unique), rows.shape[-1]).index_add_(0, position, rows)
        weight.grad.index_add_(0, unique, summed)


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, kept: KeptGradient) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.kept = kept
        return F.embedding(ids, weight, kept.embedding.padding_idx)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        ctx.kept.add_rows(ids, grad_output)
        return None, None, None


def keeps_gradient(module: nn.Module) -> bool:
    """A plain CPU embedding whose gradient torch would make dense and anew at every step."""
    return type(module) is nn.Embedding and module.weight.requires_grad and is_plain_cpu(module.weight) \
        and module.max_norm is None and not module.scale_grad_by_freq and not module.sparse


def _lookup_hook(kept: KeptGradient) -> Any:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if len(args) != 1 or not torch.is_grad_enabled() or not module.weight.requires_grad \
                or not is_plain_cpu(args[0]):
            return None
        return _Lookup.apply(args[0], module.weight, kept)  # replaces the output; torch's own graph is dropped
    return hook


@contextlib.contextmanager
def kept_embedding_gradients(model: nn.Module) -> Iterator[list[KeptGradient]]:
    """Within the block, the trainable embeddings of ``model`` keep their gradient buffers across
    steps (see the module docstring); the caller decides where that is safe."""
    users = Counter(id(param) for module in model.modules() for param in module.parameters(recurse=False))
    kept = [KeptGradient(module) for module in model.modules()
            if keeps_gradient(module) and users[id(module.weight)] == 1]
    handles = [k.embedding.register_forward_hook(_lookup_hook(k)) for k in kept]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()
        for k in kept:
            k.buffer = None
