"""Which tensors the CPU routes (``onednn.py``, ``dropout.py``) may take over from torch."""

from __future__ import annotations

from typing import Any

import torch


def is_plain_cpu(tensor: Any) -> bool:
    """A plain strided CPU tensor: not a subclass (DTensor, FakeTensor, a tensor of a compiler or
    another function mode), not sparse, not on another device; everything else goes to torch."""
    return type(tensor) in (torch.Tensor, torch.nn.Parameter) and tensor.device.type == "cpu" \
        and tensor.layout == torch.strided
