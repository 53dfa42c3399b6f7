"""Dropout on the CPU from 16-bit random draws: masks of the same distribution, drawn for less.

Torch's CPU dropout draws a float per element with ``bernoulli_`` (one 32-bit draw each, from a
single thread), divides that noise tensor by the keep probability and multiplies, and saves the
fp32 noise for the backward pass. Dropout is 7-24% of a fine-tuning step of a small encoder on
the CPU, most of it the attention probabilities' dropout inside SDPA's math path (SDPA's fused
CPU kernels take no dropout).

Here a mask comes from 64-bit random integers cut into four 16-bit ones (four elements per draw)
and one comparison; ``torch.where`` applies it (its backward keeps the bool mask,
1 byte an element instead of a float). An element is dropped with probability
``k / 65536``, ``k`` the nearest integer to ``p * 65536`` (0.1 -> 0.1000061), and kept values are
divided by that probability's complement, so the expected output is the input exactly. Attention
with dropout runs SDPA's math path with the cheap mask on the probabilities, in one respect
otherwise: under bf16 autocast its two products and the softmax run in bf16, as autocast runs
a hand-written ("eager") attention, where SDPA's math path on the CPU upcasts them to fp32. The
products accumulate in fp32 and the softmax computes in fp32 inside its kernel, so what is lost is
the rounding of the scores and of the probabilities to bf16; in exchange the (queries x keys)
tensors are half the bytes and the products run on the bf16 units (a SQuAD step in bf16 took
0.74x the time; ``benchmarks/README.md``). fp16 keeps the fp32 arithmetic: its range is too
narrow for unnormalised scores. For its backward pass it keeps the probabilities and the bool
mask, not the dropped probabilities as well, and it makes three (queries x keys) tensors a step
where autograd's operations make seven (``DroppedAttention``): a batch of 16 SQuAD windows keeps
108 MiB less a layer in fp32 and meets fewer fresh pages.

The random numbers come from torch's global CPU generator, like ``bernoulli_``'s, so seeding and
the RNG state saved in a checkpoint make the masks reproducible; they are other masks than
torch's for the same seed. Only plain CPU tensors in training take this path; GPUs (fused dropout
kernels), compiled code and everything else run torch's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from .cpu_tensors import is_plain_cpu

LEVELS = 1 << 16
# A drop probability is taken only if 16 bits carry it to within this share of itself.
MAX_RELATIVE_ERROR = 1e-3


def drop_count(p: float) -> int | None:
    """``k``: an element is dropped when its 16-bit draw is among ``k`` of the 65536 values;
    None when ``p`` is 0, 1 or too small for 16 bits to carry (then torch's dropout runs)."""
    if not 0.0 < p < 1.0:
        return None
    count = round(p * LEVELS)
    if count == 0 or count == LEVELS or abs(count / LEVELS - p) > MAX_RELATIVE_ERROR * p:
        return None
    return count


def keep_mask(x: torch.Tensor, count: int) -> torch.Tensor:
    """A bool tensor shaped like ``x``: False with probability ``count / 65536``."""
    size = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((size + 3) // 4,), dtype=torch.int64)
    halves = words.view(torch.int16)[:size].view(x.shape)
    return halves >= count - LEVELS // 2


def keep_scale(count: int) -> float:
    return 1.0 / (1.0 - count / LEVELS)


def masked_dropout(x: torch.Tensor, count: int) -> torch.Tensor:
    return torch.where(keep_mask(x, count), x, 0.0).mul_(keep_scale(count))


def attention_with_dropout(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attn_mask: torch.Tensor | None, count: int, scale: float | None) -> torch.Tensor:
    """SDPA's math path with the cheap mask on the attention probabilities. bf16 (autocast casts
    SDPA's inputs to its dtype) is computed in bf16, fp16 in fp32 (the module docstring says why).
    Passes over the (queries x keys) tensors are what cost, so the scales go on the smaller
    operands: the softmax scale on the queries, the dropout's on the values."""
    out_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    compute_dtype = torch.float32 if out_dtype == torch.float16 else out_dtype
    with torch.autocast("cpu", enabled=False):
        query, key, value = (t.to(out_dtype).to(compute_dtype) for t in (query, key, value))
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros(attn_mask.shape, dtype=compute_dtype).masked_fill_(~attn_mask, float("-inf"))
            elif torch.finfo(attn_mask.dtype).min < torch.finfo(compute_dtype).min:
                # fp32's lowest value (transformers' "masked") would round to -inf in bf16 and
                # turn a row masked throughout into NaN; fp32 gives it a uniform softmax.
                attn_mask = attn_mask.clamp(min=torch.finfo(compute_dtype).min)
            attn_mask = attn_mask.to(compute_dtype)
        return DroppedAttention.apply(query * scale, key, value * keep_scale(count), attn_mask, count).to(out_dtype)


class DroppedAttention(torch.autograd.Function):
    """``where(keep, softmax(query @ key^T + mask), 0) @ value`` with the mask ``keep`` drawn
    after the softmax, computed and differentiated as autograd would (the same products, sums
    and kernels, so the same bits), with fewer (queries x keys) tensors: autograd makes four in
    the forward pass (scores, masked scores, probabilities, dropped probabilities), keeping the
    last two, and three in the backward pass (the gradients of the last three). Here the scores
    take the mask, become the probabilities in place and are kept with the bool mask; the dropped
    probabilities are made again in the backward pass, whose three gradients (dropped
    probabilities, probabilities, scores) then overwrite that one tensor. Tensors of a few dozen
    MiB come from fresh pages at every allocation, so fewer of them is time as well as memory.
    Runs under the autocast state of its caller (none, in attention_with_dropout), also when
    ``backward()`` is called inside an autocast block."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None, count: int) -> torch.Tensor:
        scores = torch.matmul(query, key.transpose(-2, -1))
        if mask is not None:
            scores.add_(mask)
        probs = torch._softmax(scores, -1, False, out=scores)
        keep = keep_mask(probs, count)
        ctx.save_for_backward(query, key, value, probs, keep)
        ctx.mask_shape = None if mask is None else mask.shape
        return torch.matmul(torch.where(keep, probs, 0.0), value)

    @staticmethod
    @once_differentiable  # it writes into its own tensors; a second derivative is a clear error
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, probs, keep = ctx.saved_tensors
        square = torch.where(keep, probs, 0.0)
        grad_value = torch.matmul(square.transpose(-2, -1), grad) if ctx.needs_input_grad[2] else None
        torch.matmul(grad, value.transpose(-2, -1), out=square)
        torch.where(keep, square, torch.zeros((), dtype=square.dtype), out=square)
        torch.ops.aten._softmax_backward_data.out(square, probs, -1, square.dtype, grad_input=square)
        grad_query = torch.matmul(square, key) if ctx.needs_input_grad[0] else None
        grad_key = torch.matmul(query.transpose(-2, -1), square).transpose(-2, -1) if ctx.needs_input_grad[1] else None
        grad_mask = square.sum_to_size(ctx.mask_shape) if ctx.needs_input_grad[3] else None
        return grad_query, grad_key, grad_value, grad_mask, None


class CheapDropout(TorchFunctionMode):
    """Routes training-time ``F.dropout`` and ``F.scaled_dot_product_attention`` with dropout on
    plain CPU tensors to the 16-bit masks (see the module docstring)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        route = {F.dropout: self._dropout, F.scaled_dot_product_attention: self._attention}.get(func)
        if route is not None and not torch.compiler.is_compiling():
            routed = route(*args, **kwargs)
            if routed is not None:
                return routed
        return func(*args, **kwargs)

    @staticmethod
    def _dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        count = drop_count(p)
        if not training or inplace or count is None or not is_plain_cpu(input) or not input.is_floating_point():
            return None
        return masked_dropout(input, count)

    @staticmethod
    def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False) -> Any:
        count = drop_count(dropout_p)
        if count is None or is_causal or enable_gqa or not all(is_plain_cpu(t) for t in (query, key, value)):
            return None
        if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:
            return None  # broadcast batch dimensions: DroppedAttention's gradients take them as given
        if attn_mask is not None:
            # SDPA gives a query that may attend to nothing zeros; softmax would give NaN.
            if not is_plain_cpu(attn_mask):
                return None
            attends = attn_mask.any(-1) if attn_mask.dtype == torch.bool else ~torch.isneginf(attn_mask).all(-1)
            if not attends.all():
                return None
        return attention_with_dropout(query, key, value, attn_mask, count, scale)


@contextlib.contextmanager
def dropout_masks(kind: str) -> Iterator[None]:
    """Within the block, dropout draws its masks as ``kind`` says: ``fast`` (this module) or
    ``torch``."""
    if kind == "torch":
        yield
        return
    with CheapDropout():
        yield
