"""The Accelerator of a training run or of a loaded model."""

from __future__ import annotations

import os
from typing import Any

from accelerate import Accelerator

from .config import ConfigError
from .precision import agreed_mixed_precision, auto_mixed_precision


def new_accelerator(**kwargs: Any) -> Accelerator:
    """An Accelerator with these settings, even when an earlier run in this process used others.

    Accelerate keeps its settings in a process-wide singleton, so a second ``train()`` with
    another ``mixed_precision`` (a notebook, a sweep) would fail; the per-run part of that state
    is cleared first. The distributed part (process group, ranks) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(**kwargs)
    if _processes_left_apart(accelerator):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        accelerator = Accelerator(cpu=True, **kwargs)
    return accelerator


def run_accelerator(mixed_precision: str, **kwargs: Any) -> tuple[Accelerator, str, str | None]:
    """The Accelerator of a training run, the mixed precision it runs with (``mixed_precision``,
    or what ``auto`` resolved to: bf16 or no) and, for ``auto``, why (else None).

    ``auto`` is resolved once, on the device the run trains on (``precision.auto_mixed_precision``),
    and under ``accelerate launch`` the processes agree: bf16 only where every one of them has it.
    fp16 on a CPU is an error: Accelerate would quietly train in fp32 while the run said fp16.
    """
    if mixed_precision != "auto":
        accelerator = new_accelerator(mixed_precision=mixed_precision, **kwargs)
        if mixed_precision == "fp16" and accelerator.device.type == "cpu":
            raise ConfigError("mixed_precision: fp16 needs a GPU; this run trains on the CPU, where Accelerate "
                              "would run it in fp32: use bf16, auto or no")
        return accelerator, mixed_precision, None
    accelerator = new_accelerator(mixed_precision="no", **kwargs)  # where the run trains
    resolved, why = auto_mixed_precision(accelerator.device)
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        agreed = agreed_mixed_precision(gather_object([resolved]))
        if agreed != resolved:
            resolved, why = agreed, "not every process has native bf16"
    if resolved != "no":
        accelerator = new_accelerator(mixed_precision=resolved, **kwargs)
    return accelerator, resolved, why


def _processes_left_apart(accelerator: Accelerator) -> bool:
    """Whether the launcher started several processes that each run alone on a CPU.

    ``accelerate launch --multi_gpu`` (torchrun) on a machine without GPUs starts the processes,
    but Accelerate joins them (gloo) only when told to use the CPU (``ACCELERATE_USE_CPU``);
    otherwise each would train its own copy and all would write the same files. Such a launch
    can only mean CPU processes, so they are joined as such.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    return launched > 1 and accelerator.num_processes == 1 and accelerator.device.type == "cpu"
