"""Training on the CPU and glibc's heap: by default the trainer hands the heap's free memory back
every ``FINETUNE_KIT_TRIM_HEAP_EVERY`` optimizer steps (``malloc_trim`` returns free pages from the
middle of the heap, which glibc alone keeps); asked for, it keeps freed memory for the next step
instead: inside ``reusing_freed_memory`` large blocks come from the heap and from fresh mappings
again after it; the user's own malloc settings are respected either way."""

import os
import subprocess
import sys
import textwrap

import pytest

import finetune_kit as fk
from finetune_kit import host_memory, trainer
from finetune_kit.config import ConfigError
from tests.conftest import NEGATIVE, POSITIVE, write_csv

needs_glibc = pytest.mark.skipif(host_memory._glibc() is None or sys.platform != "linux", reason="glibc only")
# What decides whether the context acts; each test starts with none of it set.
SETTINGS = host_memory.USER_MALLOC_SETTINGS + (host_memory.ENV_SWITCH, host_memory.TRIM_EVERY_ENV, "GLIBC_TUNABLES")

# Prints, in MiB: how much more memory glibc holds in mmap'd blocks (mallinfo2's hblkhd) after a
# 64 MiB tensor is allocated outside the block and inside it; inside, how much its heap grew
# (mallinfo2's arena) when a 48 MiB tensor followed the first one freed (0: the freed memory was
# reused; a little smaller, since small objects may have taken the freed block's first bytes); and after the block, what a 256 MiB tensor (larger than anything the heap
# has free) adds to the mmap'd blocks.
PROBE = textwrap.dedent("""
    import ctypes, torch
    from finetune_kit.host_memory import can_keep_freed_memory, reusing_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    def grown(field, mib):
        before = getattr(libc.mallinfo2(), field)
        block = torch.empty(mib << 20, dtype=torch.uint8)
        return (getattr(libc.mallinfo2(), field) - before) >> 20, block
    outside, block = grown("hblkhd", 64)
    del block
    with reusing_freed_memory():
        inside, block = grown("hblkhd", 64)
        del block
        heap_growth, block = grown("arena", 48)
        del block
    after, block = grown("hblkhd", 256)
    print(can_keep_freed_memory(), outside, inside, heap_growth, after)
""")


def probe(**environment: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**clean, **environment}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@needs_glibc
def test_inside_the_block_a_large_tensor_comes_from_the_heap_and_reuses_the_freed_pages():
    keeps, outside, inside, heap_growth, after = probe()
    assert keeps == "True"
    assert (outside, inside, after) == ("64", "0", "256")  # glibc's mmap before and after the block
    assert heap_growth == "0"


@needs_glibc
@pytest.mark.parametrize("setting", [{"MALLOC_MMAP_MAX_": "65536"},
                                     {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}])
def test_the_users_own_malloc_settings_leave_glibc_as_it_is(setting):
    keeps, outside, inside, _, after = probe(**setting)
    assert keeps == "False"
    assert (outside, inside, after) == ("64", "64", "256")


class RecordingLibc:
    def __init__(self, calls: list):
        self.calls = calls

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def train_recording(tiny_encoder, tmp_path, monkeypatch, switch: str | None, steps: int = 3,
                    **environment: str) -> list:
    """Trains ``steps`` steps with glibc replaced by a recorder; the steps (each a ``dropout_masks``
    block) are recorded among glibc's calls."""
    calls: list = []
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    if switch is not None:
        monkeypatch.setenv(host_memory.ENV_SWITCH, switch)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(host_memory, "_glibc", lambda: RecordingLibc(calls))
    real_masks = trainer.dropout_masks

    def recording_masks(kind):
        calls.append(("step",))
        return real_masks(kind)

    monkeypatch.setattr(trainer, "dropout_masks", recording_masks)
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(write_csv(tmp_path / "train.csv", rows)),
             output_dir=str(tmp_path / "run"), batch_size=8, max_steps=steps, report_plots=False, bootstrap_resamples=0)
    return calls


def test_asked_for_training_on_the_cpu_runs_its_steps_with_freed_memory_kept_and_restores_glibc_after(
        tiny_encoder, tmp_path, monkeypatch):
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, "1")
    kept = [("mallopt", host_memory.M_MMAP_MAX, 0), ("mallopt", host_memory.M_TRIM_THRESHOLD, -1)]
    restored = [("mallopt", host_memory.M_MMAP_MAX, 65536), ("mallopt", host_memory.M_TRIM_THRESHOLD, 128 * 1024),
                ("malloc_trim", 0)]
    assert calls == kept + [("step",)] * 3 + restored


# What training on the CPU sets before its first step unless freed memory is kept: glibc's
# thresholds where its own dynamic adjustment stops on 64-bit systems (32 MiB, twice that).
RAISED = [("mallopt", host_memory.M_MMAP_THRESHOLD, 32 << 20), ("mallopt", host_memory.M_TRIM_THRESHOLD, 64 << 20)]


@pytest.mark.parametrize("switch", [None, "0"])
def test_by_default_or_switched_off_training_raises_glibcs_thresholds_and_trims_after_its_tenth_step(
        tiny_encoder, tmp_path, monkeypatch, switch):
    assert host_memory.DEFAULT_TRIM_EVERY == 10
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, switch, steps=11)
    assert calls == RAISED + [("step",)] * 10 + [("malloc_trim", 0), ("step",)]


def test_the_heap_is_trimmed_after_every_nth_optimizer_step(tiny_encoder, tmp_path, monkeypatch):
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, None, steps=5,
                            **{host_memory.TRIM_EVERY_ENV: "2"})
    trim = ("malloc_trim", 0)
    assert calls == RAISED + [("step",), ("step",), trim, ("step",), ("step",), trim, ("step",)]


def test_trimming_switched_off_still_raises_the_thresholds(tiny_encoder, tmp_path, monkeypatch):
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, None, **{host_memory.TRIM_EVERY_ENV: "0"})
    assert calls == RAISED + [("step",)] * 3


@pytest.mark.parametrize("environment", [{host_memory.TRIM_EVERY_ENV: "1", "MALLOC_MMAP_THRESHOLD_": "131072"},
                                         {host_memory.TRIM_EVERY_ENV: "1", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}])
def test_malloc_tuned_by_the_user_leaves_glibc_alone(tiny_encoder, tmp_path, monkeypatch, environment):
    assert train_recording(tiny_encoder, tmp_path, monkeypatch, None, **environment) == [("step",)] * 3


def test_with_freed_memory_kept_the_heap_is_not_trimmed_between_steps(tiny_encoder, tmp_path, monkeypatch):
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, "1", **{host_memory.TRIM_EVERY_ENV: "1"})
    assert calls[2:-3] == [("step",)] * 3  # between keeping (2 calls) and restoring glibc (3 calls)


@pytest.mark.parametrize("value", ["ten", "-1", "2.5"])
def test_a_trim_interval_that_is_not_a_whole_number_is_a_one_line_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(host_memory.TRIM_EVERY_ENV, value)
    with pytest.raises(ConfigError, match=rf"^FINETUNE_KIT_TRIM_HEAP_EVERY='{value}': expected a whole number"):
        host_memory.heap_trim_interval()


# Prints the MiB of resident memory glibc gave back when 64 MiB of small blocks (under the mmap
# threshold, so in the heap), every other one of 2,048 still in use, were freed, and then when
# trim_heap ran. The freed blocks lie between blocks in use, so glibc alone keeps their pages.
TRIM_PROBE = textwrap.dedent("""
    import ctypes, os
    from finetune_kit.host_memory import trim_heap
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    size = 64 * 1024 - 64
    blocks = [libc.malloc(size) for _ in range(2048)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    before = rss_mib()
    for block in blocks[::2]:
        libc.free(block)
    freed = rss_mib()
    trim_heap()
    print(round(before - freed), round(freed - rss_mib()))
""")


@needs_glibc
def test_trim_heap_hands_back_free_pages_from_the_middle_of_the_heap_that_glibc_alone_keeps():
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, env=clean, timeout=120)
    assert done.returncode == 0, done.stderr
    by_free, by_trim = (int(mib) for mib in done.stdout.split())
    assert by_free <= 4
    assert by_trim >= 56  # of the 64 MiB freed; each block's first page holds glibc's bookkeeping


# Prints the page faults of writing 40 MiB of 2 MiB tensors (a small encoder's gradients are
# blocks of this size) after the same tensors were written and freed, with glibc's thresholds as
# the process found them or raised first.
REUSE_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from finetune_kit.host_memory import raise_heap_thresholds
    if sys.argv[1] == "raised":
        raise_heap_thresholds()
    def write_and_free():
        blocks = [torch.ones(1 << 19) for _ in range(20)]
        del blocks
    write_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    write_and_free()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@needs_glibc
def test_with_the_thresholds_raised_freed_gradient_sized_blocks_are_reused_without_page_faults():
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    faults = {}
    for mode in ("as-found", "raised"):
        done = subprocess.run([sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True,
                              env=clean, timeout=120)
        assert done.returncode == 0, done.stderr
        faults[mode] = int(done.stdout)
    assert faults["as-found"] >= 8000  # 40 MiB of fresh 4 KiB pages: 10,240 (10,153-10,195 measured)
    assert faults["raised"] <= 1024  # 512 measured
