"""The Accelerator of a training run or of a loaded model."""

from __future__ import annotations

import os
from typing import Any

from accelerate import Accelerator


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


def _processes_left_apart(accelerator: Accelerator) -> bool:
    """Whether the launcher started several processes that each run alone on a CPU.

    ``accelerate launch --multi_gpu`` (torchrun) on a machine without GPUs starts the processes,
    but Accelerate joins them (gloo) only when told to use the CPU (``ACCELERATE_USE_CPU``);
    otherwise each would train its own copy and all would write the same files. Such a launch
    can only mean CPU processes, so they are joined as such.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    return launched > 1 and accelerator.num_processes == 1 and accelerator.device.type == "cpu"
