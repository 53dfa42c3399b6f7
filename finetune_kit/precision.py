"""``mixed_precision: auto``: bf16 where the hardware multiplies bf16 matrices natively, else fp32.

A CPU counts when it has AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``): on Linux as
``/proc/cpuinfo`` lists its flags (on every core), elsewhere, or where that file has no flags,
as torch detects them (``torch.cpu.get_capabilities``). Other CPUs (ARM, Apple silicon, x86
without those extensions) can run bf16 autocast too, but by emulation, slower than fp32, so they
get fp32. A CUDA GPU counts when it supports bf16 without emulation (compute capability 8.0 or
later, or ROCm). Any other device gets fp32; fp16 is never chosen.

The functions take the cpuinfo text and torch's capabilities as arguments, so the decision is
testable without the hardware; the Accelerator side (every process agreeing) is
``accelerator.run_accelerator``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

# The CPU flags of native bf16 matrix products.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_flags(cpuinfo: str) -> set[str] | None:
    """The flags every processor of ``/proc/cpuinfo`` text has (x86 ``flags`` lines); None when
    the text has none (ARM lists ``Features`` instead, and other systems have no such file)."""
    flags: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "flags":
            found = set(value.split())
            flags = found if flags is None else flags & found
    return flags


def read_cpuinfo(path: Path = CPUINFO) -> str | None:
    """The text of ``/proc/cpuinfo``; None where it cannot be read (not Linux, a sandbox)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def torch_cpu_capabilities() -> Mapping[str, Any]:
    """The CPU features torch detected (``torch.cpu.get_capabilities``; in a torch without it,
    its private AVX-512 BF16 and AMX probes where they exist; else none)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return get_capabilities()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return {flag: bool(getattr(torch.cpu, probe)()) for flag, probe in probes.items() if hasattr(torch.cpu, probe)}


def native_bf16_cpu_flags(cpuinfo: str | None = None, capabilities: Mapping[str, Any] | None = None) -> list[str]:
    """The CPU's native bf16 flags (``NATIVE_BF16_FLAGS``); empty: none.

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (None: read it); where it lists no flags,
    ``capabilities`` decide (None: torch's)."""
    flags = cpuinfo_flags(cpuinfo if cpuinfo is not None else read_cpuinfo() or "")
    if flags is None:
        found = capabilities if capabilities is not None else torch_cpu_capabilities()
        flags = {flag for flag in NATIVE_BF16_FLAGS if found.get(flag)}
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA device computes in bf16 natively (not by emulation)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch without including_emulation
        return torch.cuda.is_bf16_supported()


def auto_mixed_precision(device: torch.device, cpuinfo: str | None = None,
                         capabilities: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """What ``auto`` means on ``device``: ``("bf16" or "no", why)``; ``cpuinfo`` and
    ``capabilities`` as ``native_bf16_cpu_flags`` takes them."""
    if device.type == "cpu":
        flags = native_bf16_cpu_flags(cpuinfo, capabilities)
        if flags:
            return "bf16", f"the CPU has {' and '.join(flags)}"
        return "no", "the CPU has neither AMX nor AVX-512 BF16"
    if device.type == "cuda":
        if cuda_has_native_bf16():
            return "bf16", "the GPU supports bf16"
        return "no", "the GPU does not support bf16 natively"
    return "no", f"bf16 is chosen on CPUs and CUDA GPUs only, not on {device.type}"


def agreed_mixed_precision(choices: Iterable[str]) -> str:
    """The one value every process runs with, from each process's ``auto`` choice: bf16 only
    where all of them chose it (a run is as fast as its slowest process)."""
    choices = list(choices)
    return "bf16" if choices and all(choice == "bf16" for choice in choices) else "no"
