"""Dropout on the CPU from 16-bit random draws: masks of the same distribution, drawn for less.

Torch's CPU dropout draws a float per element with ``bernoulli_`` (one 32-bit draw each, from a
single thread), divides that noise tensor by the keep probability and multiplies, and saves the
fp32 noise for the backward pass. Dropout is 7-24% of a fine-tuning step of a small encoder on
the CPU, most of it the attention probabilities' dropout inside SDPA's math path (SDPA's fused
CPU kernels take no dropout).

Here a mask comes from 64-bit random words cut into four 16-bit draws (four elements per word)
and one comparison (``MaskDraws``), and is applied as a product with its 1s and 0s in the
tensor's dtype; the backward pass keeps the bool mask, 1 byte an element instead of a float. An
element is dropped with probability ``k / 65536``, ``k`` the nearest integer to ``p * 65536``
(0.1 -> 0.1000061), and kept values are divided by that probability's complement, so the
expected output is the input exactly. Attention
with dropout runs SDPA's math path with the cheap mask on the probabilities, in one respect
otherwise: under bf16 autocast its two products and the softmax run in bf16, as autocast runs
a hand-written ("eager") attention, where SDPA's math path on the CPU upcasts them to fp32. The
products accumulate in fp32 and the softmax computes in fp32 inside its kernel, so what is lost is
the rounding of the scores and of the probabilities to bf16; in exchange the (queries x keys)
tensors are half the bytes and the products run on the bf16 units (a SQuAD step in bf16 took
0.74x the time; ``benchmarks/README.md``). fp16 keeps the fp32 arithmetic: its range is too
narrow for unnormalised scores. Attention runs a batch entry at a time, each entry's
(queries x keys) passes in the cache, and keeps only the bool mask for its backward pass, which
computes the probabilities again (``DroppedAttention``): autograd's operations make seven
(queries x keys) tensors a layer and step and keep two, 108 MiB each for 16 SQuAD windows in fp32.

Each mask's random stream is seeded by one draw of torch's global CPU generator, so seeding and
the RNG state saved in a checkpoint make the masks reproducible; they are other masks than
torch's for the same seed. Only plain CPU tensors in training take this path; GPUs (fused dropout
kernels), compiled code and everything else run torch's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
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


class MaskDraws:
    """Keep masks from one PCG64DXSM stream (numpy's) seeded by one draw of torch's CPU generator,
    so torch's seed and saved RNG state fix them. Its 64-bit words are cut into four 16-bit draws
    and compared in numpy: 0.9 ms for 1.8M elements where torch's ``randint`` and ``ge`` take 2.2
    (one 32-bit Mersenne Twister draw at a time, a compare into bool element by element)."""

    def __init__(self) -> None:
        self.bits = np.random.PCG64DXSM(int(torch.randint(0, 1 << 62, (), dtype=torch.int64)))

    def fill(self, keep: torch.Tensor, count: int) -> torch.Tensor:
        """Writes a mask into the contiguous bool tensor ``keep``: False with probability
        ``count / 65536``."""
        size = keep.numel()
        halves = self.bits.random_raw((size + 3) // 4).view(np.int16)[:size]
        np.greater_equal(halves, count - LEVELS // 2, out=keep.numpy().reshape(-1))
        return keep


def keep_mask(x: torch.Tensor, count: int) -> torch.Tensor:
    """A bool tensor shaped like ``x``: False with probability ``count / 65536``."""
    return MaskDraws().fill(torch.empty(x.shape, dtype=torch.bool), count)


def keep_scale(count: int) -> float:
    return 1.0 / (1.0 - count / LEVELS)


def float_mask(keep: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``keep`` as 1s and 0s of ``buffer``'s dtype, written into ``buffer``: products with it run
    vectorised, where ``torch.where`` and products with bool or uint8 tensors convert element by
    element (1.0 ms against 0.1 for 1.8M fp32 elements)."""
    return buffer[: keep.numel()].view(keep.shape).copy_(keep.view(torch.uint8))


def masked_dropout(x: torch.Tensor, count: int) -> torch.Tensor:
    return MaskedDropout.apply(x, count)


class MaskedDropout(torch.autograd.Function):
    """``where(keep, x, 0) * scale`` and its gradient as products with the mask in ``x``'s dtype
    (1s and 0s, ``float_mask``), then the scale: the same values (but for the sign of a zero),
    where torch's CPU ``where``, and products with a bool or uint8 tensor, convert element by
    element (1.4-5 ms for 2.4M fp32 elements against 0.4). The backward pass keeps the bool mask,
    as ``where``'s does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, count: int) -> torch.Tensor:
        keep = keep_mask(x, count)
        ctx.save_for_backward(keep)
        ctx.scale = keep_scale(count)
        return torch.mul(x, float_mask(keep, x.new_empty(keep.numel()))).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, float_mask(keep, grad.new_empty(keep.numel()))).mul_(ctx.scale), None


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
        return DroppedAttention.apply(contiguous_product(query, scale), key.contiguous(),
                                      contiguous_product(value, keep_scale(count)), attn_mask, count).to(out_dtype)


def contiguous_product(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x * factor``, contiguous. Attention's inputs come as views of (batch, length, heads, head
    size) tensors; contiguous, a piece's heads are its batched products' operands as they are (a
    view), where otherwise each product of each piece copies them, twelve copies a piece in the
    backward pass."""
    return x.clone(memory_format=torch.contiguous_format).mul_(factor)


# (queries x keys) elements per piece of DroppedAttention: a sequence's attention at 384 tokens
# (1.8M, 7 MiB in fp32) is one piece, so each piece's passes run in the 32 MiB L3 cache.
PIECE_ELEMENTS = 1 << 21


def pieces(shape: torch.Size) -> list[slice]:
    """Slices of the first (batch) dimension of at most PIECE_ELEMENTS elements each (at least
    one entry); one piece when there is no batch dimension."""
    if len(shape) < 3:
        return [slice(None)]
    rows = max(1, PIECE_ELEMENTS // max(shape[1:].numel(), 1))
    return [slice(start, start + rows) for start in range(0, shape[0], rows)]


def mask_part(mask: torch.Tensor, rows: slice, dims: int) -> torch.Tensor:
    """The rows of ``mask`` for ``rows`` of a ``dims``-dimensional (queries x keys) tensor: all
    of it where it broadcasts over the batch."""
    if mask.dim() == dims and mask.shape[0] > 1:
        return mask[rows]
    return mask


def piece_probabilities(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                        dims: int, buffer: torch.Tensor) -> torch.Tensor:
    """``softmax(query @ key^T + mask)`` for ``rows``, computed in ``buffer``."""
    piece = query[rows].shape[:-1] + key.shape[-2:-1]
    scores = buffer[: piece.numel()].view(piece)
    torch.matmul(query[rows], key[rows].transpose(-2, -1), out=scores)
    if mask is not None:
        scores.add_(mask_part(mask, rows, dims))
    return torch._softmax(scores, -1, False, out=scores)


class DroppedAttention(torch.autograd.Function):
    """``where(keep, softmax(query @ key^T + mask), 0) @ value``, the mask ``keep`` drawn with
    the probabilities, computed and differentiated with autograd's products, softmax and sums
    (the same kernels on the same operands, so the same bits) a piece of the batch at a time.

    Autograd's operations make seven (queries x keys) tensors a layer and step (the scores, the
    masked scores, the probabilities, the dropped probabilities, and their three gradients) and
    keep two for the backward pass: 108 MiB each for 16 windows of 384 tokens in fp32, written to
    and read from memory, each pass over them at memory speed. Here a piece of the batch (a
    sequence at 384 tokens) goes through all its passes while it is in the cache: scores, mask,
    softmax and dropout into one piece-sized buffer, then the product with the values. Only the
    bool mask is kept; the backward pass computes each piece's probabilities again (one more
    product with the keys and a softmax, a few percent of the pass) and writes the dropped
    probabilities' gradient, the probabilities' and the scores' into one piece-sized buffer.
    A mask that broadcasts over the batch and takes a gradient (a learned bias) is done in one
    piece, so that its gradient is summed as autograd sums it. Runs under the autocast state of
    its caller (none, in attention_with_dropout), also when ``backward()`` is called inside an
    autocast block."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None, count: int) -> torch.Tensor:
        shape = query.shape[:-1] + key.shape[-2:-1]
        keep = torch.empty(shape, dtype=torch.bool)
        out = query.new_empty(query.shape[:-1] + value.shape[-1:])
        parts = pieces(shape)
        largest = keep[parts[0]].numel()
        scores, ones = query.new_empty(largest), query.new_empty(largest)
        draws = MaskDraws()
        for rows in parts:
            probs = piece_probabilities(query, key, mask, rows, len(shape), scores)
            probs.mul_(float_mask(draws.fill(keep[rows], count), ones))
            torch.matmul(probs, value[rows], out=out[rows])
        ctx.save_for_backward(query, key, value, mask, keep)
        return out

    @staticmethod
    @once_differentiable  # it writes into its own tensors; a second derivative is a clear error
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, mask, keep = ctx.saved_tensors
        grad = grad.contiguous()  # a transposed view's gradient, read by two products a piece
        need_query, need_key, need_value, need_mask = ctx.needs_input_grad[:4]
        shape = keep.shape
        grad_query = torch.empty_like(query) if need_query else None
        grad_key = torch.empty_like(key) if need_key else None
        grad_value = torch.empty_like(value) if need_value else None
        grad_mask = query.new_zeros(mask.shape) if need_mask else None
        broadcast_mask = need_mask and mask_part(mask, slice(0, 1), len(shape)) is mask
        parts = [slice(None)] if broadcast_mask else pieces(shape)
        largest = keep[parts[0]].numel()
        scores, ones, square = (query.new_empty(largest) for _ in range(3))
        for rows in parts:
            probs = piece_probabilities(query, key, mask, rows, len(shape), scores)
            kept = float_mask(keep[rows], ones)
            dropped = torch.mul(probs, kept, out=square[: probs.numel()].view(probs.shape))
            if need_value:
                torch.matmul(dropped.transpose(-2, -1), grad[rows], out=grad_value[rows])
            gradient = torch.matmul(grad[rows], value[rows].transpose(-2, -1), out=dropped).mul_(kept)
            torch.ops.aten._softmax_backward_data.out(gradient, probs, -1, gradient.dtype, grad_input=gradient)
            if need_query:
                torch.matmul(gradient, key[rows], out=grad_query[rows])
            if need_key:  # as autograd's matmul backward takes it: (q^T G)^T, the same product
                grad_key[rows] = torch.matmul(query[rows].transpose(-2, -1), gradient).transpose(-2, -1)
            if need_mask:
                part = mask_part(grad_mask, rows, len(shape))
                part += gradient.sum_to_size(part.shape)
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
