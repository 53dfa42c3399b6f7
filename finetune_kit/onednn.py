"""fp32 linear layers through oneDNN when running a model on the CPU without gradients, and
oneDNN's kernel cache kept small.

PyTorch's CPU wheel computes ``nn.Linear`` in fp32 with MKL's sgemm. On CPUs that MKL does not
give its fastest code path (AMD EPYC here: 2 cores, 174 GFLOP/s) oneDNN's matmul, which PyTorch
also ships and picks its kernels by the instruction set the CPU has, runs the same product at
about 2.4x the speed (420 GFLOP/s), and the linear layers are 85% of an encoder's inference time.
The result is the same fp32 product up to summation order (differences around 1e-6).

Used only where it cannot change what is computed: no autograd, no autocast, plain dense fp32 CPU
tensors. Everything else (training, bf16 autocast, GPUs, tensor subclasses of FSDP/DeepSpeed)
goes to ``F.linear`` as before. ``FINETUNE_KIT_ONEDNN_LINEAR=0`` turns it off. (Training through
oneDNN too was measured and left out: no faster for a training step's shapes, and 370 MiB more
peak memory on RTE; see benchmarks/README.md.)

oneDNN builds a kernel per product shape and keeps the last 1,024 built (some hundreds of KB
each). Batches of similar length change their shapes at every step, so the cache fills with
kernels that are not used again: the products above at evaluation, and every bf16 product under
autocast, which torch runs through oneDNN. ``limit_primitive_cache`` caps the cache at
``PRIMITIVE_CACHE_CAPACITY`` unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``; a step still
reuses the kernels of its shapes across its layers.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .cpu_tensors import is_plain_cpu

ENV_SWITCH = "FINETUNE_KIT_ONEDNN_LINEAR"
PRIMITIVE_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
PRIMITIVE_CACHE_CAPACITY = 8


def limit_primitive_cache() -> None:
    """Caps oneDNN's kernel cache (see the module docstring) unless the user set its capacity.
    Takes effect only if oneDNN has not built a kernel in this process yet."""
    os.environ.setdefault(PRIMITIVE_CACHE_ENV, str(PRIMITIVE_CACHE_CAPACITY))


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's linear and it gives F.linear's product on a probe."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return False
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=generator) for shape in ((3, 5, 16), (24, 16), (24,)))
    try:
        with torch.no_grad():
            return bool(torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5, rtol=1e-5))
    except RuntimeError:
        return False


def _plain_cpu_fp32(tensor: Any) -> bool:
    return is_plain_cpu(tensor) and tensor.dtype == torch.float32


class OneDnnLinear(TorchFunctionMode):
    """Routes eligible ``F.linear`` calls (see the module docstring) to oneDNN's matmul."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # A compiled model (``torch.compile``, Accelerate's dynamo backend) is left to its compiler,
        # which cannot trace oneDNN's op.
        if func is F.linear and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") \
                and not torch.compiler.is_compiling():
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight.dim() == 2 and x.dim() >= 2 and all(_plain_cpu_fp32(t) for t in (x, weight)) \
                    and (bias is None or _plain_cpu_fp32(bias)):
                return onednn_linear(x, weight, bias)
        return func(*args, **kwargs)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@contextlib.contextmanager
def onednn_linears() -> Iterator[None]:
    """Within the block, eligible linear layers run through oneDNN (where it works here)."""
    if not onednn_linear_works():
        yield
        return
    with OneDnnLinear():
        yield
