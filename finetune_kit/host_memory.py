"""Training on the CPU and glibc's heap: handing freed memory back every few steps (the default),
or keeping it for the next step (asked for).

glibc gives the system back only the free memory at the top of its heap. A training step frees
its activations, but blocks that stay in use (optimizer state made at the first step, Python
objects, the loader's tensors) lie between them, so the free pages in the middle stay resident and
batches of changing shapes leave the heap ever more fragmented: over three epochs of RTE in bf16
the process grew from 1,368 MiB before the first step to 2,303-2,374 (two runs), and glibc's heap held
at the end 1.2 GB free of 1.7. By default the trainer calls ``malloc_trim`` (which also returns free pages
inside the heap) every ``DEFAULT_TRIM_EVERY`` optimizer steps on the CPU: the same run peaked at
2,186 MiB against 2,374 in the same time (172.8 s against 173.4; every step: 2,007 MiB, but 1.19x the time, as
the next step faults the pages in again; ``benchmarks/README.md``).
``FINETUNE_KIT_TRIM_HEAP_EVERY=N`` sets the interval in steps; 0 turns it off.

glibc serves a request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps it when freed, and gives the top of its heap back to the system once enough of it is
free. A training step allocates the same large tensors at every step: the embedding matrix's
gradient (30k x 384 fp32, 45 MiB), and at long sequences the attention scores and probabilities
(16 x 12 x 384 x 384: 54 MiB in bf16, 108 MiB in fp32), so each step meets fresh pages and
pays a page fault per 4 KiB on first touch. Page faults made an element-wise pass over such a
tensor 1.7-14x slower than over memory already mapped, and a SQuAD training step (384-token
windows) 1.2-1.3x as long (``benchmarks/README.md``, ``benchmarks/host_memory.py``).

glibc raises both thresholds on its own (the mmap threshold to the size of a mapped block when
it is freed, the trim threshold to twice that), up to 32 MiB and 64 MiB on 64-bit systems; but
only after a block that large was freed. A small encoder's step frees blocks of a few MiB (its
weights' gradients, 2.25 MiB at most for MiniLM), so the thresholds stay low, and the 44 MiB of
gradients that ``zero_grad`` frees at the top of the heap are handed back after every step and
faulted in again by the next: 5,000-9,000 page faults a step in fp32 at SST-2's lengths.
``raise_heap_thresholds`` sets them where glibc's own adjustment ends, which it never lowers
again, so nothing needs restoring; training on the CPU calls it before its first step (those page
faults fell to under 200 a step and an fp32 step took 0.82-0.90x the time; ``benchmarks/README.md``).

While ``reusing_freed_memory`` is open, large blocks come from the heap (``M_MMAP_MAX`` 0) and the
heap is not trimmed (``M_TRIM_THRESHOLD`` at its largest), so a step reuses the pages the last one
freed. On leaving, glibc's defaults for both come back and ``malloc_trim`` hands the free memory
back. The price is the memory the heap keeps between steps: the peak RSS of a SQuAD run rose
14% (bf16) to 20% (fp32) for 1.06x and 1.14x the tokens/s, which would take finetune-kit's peak
over the Trainer recipe's where it is close today. So it is asked for, not the default:
``FINETUNE_KIT_KEEP_FREED_MEMORY=1`` makes training on the CPU run inside it (and not trim). A user who tunes
malloc through its environment variables (``MALLOC_*_``, ``GLIBC_TUNABLES``) keeps their
settings; elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

from .config import ConfigError

ENV_SWITCH = "FINETUNE_KIT_KEEP_FREED_MEMORY"
TRIM_EVERY_ENV = "FINETUNE_KIT_TRIM_HEAP_EVERY"
DEFAULT_TRIM_EVERY = 10
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

# mallopt's parameters (<malloc.h>) and glibc's defaults for them.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# Where glibc's dynamic thresholds stop rising (DEFAULT_MMAP_THRESHOLD_MAX: 32 MiB on 64-bit).
MAX_DYNAMIC_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
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
    """Whether ``reusing_freed_memory`` and the trimming change anything here: glibc, and malloc
    not tuned by the user."""
    if _glibc() is None or any(name in os.environ for name in USER_MALLOC_SETTINGS):
        return False
    return "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")


def heap_trim_interval() -> int:
    """Every how many optimizer steps training on the CPU hands glibc's free memory back; 0 for
    never: not glibc, malloc tuned by the user, freed memory kept on request, or
    ``FINETUNE_KIT_TRIM_HEAP_EVERY=0``."""
    value = os.environ.get(TRIM_EVERY_ENV, str(DEFAULT_TRIM_EVERY)).strip()
    if not value.isdigit():
        raise ConfigError(f"{TRIM_EVERY_ENV}={value!r}: expected a whole number of steps (0 turns trimming off)")
    if keep_freed_memory_requested() or not can_keep_freed_memory():
        return 0
    return int(value)


def trim_heap() -> None:
    """Hands the free memory of glibc's heap back to the system, the pages inside it included."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def raise_heap_thresholds() -> None:
    """Sets glibc's mmap and trim thresholds where its own dynamic adjustment ends (see the module
    docstring), so a step's freed gradients stay in the heap for the next; nothing where malloc is
    not glibc or the user tuned it."""
    if not can_keep_freed_memory():
        return
    libc = _glibc()
    libc.mallopt(M_MMAP_THRESHOLD, MAX_DYNAMIC_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 2 * MAX_DYNAMIC_MMAP_THRESHOLD)


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
