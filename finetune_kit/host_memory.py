"""Training on the CPU with glibc's malloc keeping freed memory for the next step.

glibc serves a request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps it when freed, and gives the top of its heap back to the system once enough of it is
free. A training step allocates the same large tensors at every step: the embedding matrix's
gradient (30k x 384 fp32, 45 MiB), and at long sequences the attention scores and probabilities
(16 x 12 x 384 x 384: 54 MiB in bf16, 108 MiB in fp32), so each step meets fresh pages and
pays a page fault per 4 KiB on first touch. Page faults made an element-wise pass over such a
tensor 1.7-14x slower than over memory already mapped, and a SQuAD training step (384-token
windows) 1.2-1.3x as long (``benchmarks/README.md``, ``benchmarks/host_memory.py``).

While ``reusing_freed_memory`` is open, large blocks come from the heap (``M_MMAP_MAX`` 0) and the
heap is not trimmed (``M_TRIM_THRESHOLD`` at its largest), so a step reuses the pages the last one
freed. On leaving, glibc's defaults for both come back and ``malloc_trim`` hands the free memory
back. The price is the memory the heap keeps between steps: the peak RSS of a SQuAD run rose
14% (bf16) to 20% (fp32) for 1.06x and 1.14x the tokens/s, which would take finetune-kit's peak
over the Trainer recipe's where it is close today. So it is asked for, not the default:
``FINETUNE_KIT_KEEP_FREED_MEMORY=1`` makes training on the CPU run inside it. A user who tunes
malloc through its environment variables (``MALLOC_*_``, ``GLIBC_TUNABLES``) keeps their
settings; elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

ENV_SWITCH = "FINETUNE_KIT_KEEP_FREED_MEMORY"
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

# mallopt's parameters (<malloc.h>) and glibc's defaults for them.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
# mallopt takes an int and glibc stores the trim threshold as a size_t: -1 is the largest, never trim.
NEVER_TRIM = -1


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present only in glibc)
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def keep_freed_memory_requested() -> bool:
    """Whether the user asked training to keep freed memory (``FINETUNE_KIT_KEEP_FREED_MEMORY=1``)."""
    return os.environ.get(ENV_SWITCH, "0") == "1"


def can_keep_freed_memory() -> bool:
    """Whether ``reusing_freed_memory`` changes anything here: glibc, and malloc not tuned by the
    user."""
    if _glibc() is None or any(name in os.environ for name in USER_MALLOC_SETTINGS):
        return False
    return "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Within the block, freed memory stays with the process for reuse (see the module docstring)."""
    if not can_keep_freed_memory():
        yield
        return
    libc = _glibc()
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
