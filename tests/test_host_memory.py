"""Training on the CPU can keep glibc's freed memory for the next step: inside
``reusing_freed_memory`` large blocks come from the heap and from fresh mappings again after it;
the user's own malloc settings are respected; the trainer's steps run inside it when asked
(``FINETUNE_KIT_KEEP_FREED_MEMORY=1``) and without it by default."""

import os
import subprocess
import sys
import textwrap

import pytest

import finetune_kit as fk
from finetune_kit import host_memory, trainer
from tests.conftest import NEGATIVE, POSITIVE, write_csv

needs_glibc = pytest.mark.skipif(host_memory._glibc() is None or sys.platform != "linux", reason="glibc only")
# What decides whether the context acts; each test starts with none of it set.
SETTINGS = host_memory.USER_MALLOC_SETTINGS + (host_memory.ENV_SWITCH, "GLIBC_TUNABLES")

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


def train_recording(tiny_encoder, tmp_path, monkeypatch, switch: str | None) -> list:
    """Trains 3 steps with glibc replaced by a recorder; the steps (each a ``dropout_masks``
    block) are recorded among glibc's calls."""
    calls: list = []
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    if switch is not None:
        monkeypatch.setenv(host_memory.ENV_SWITCH, switch)
    monkeypatch.setattr(host_memory, "_glibc", lambda: RecordingLibc(calls))
    real_masks = trainer.dropout_masks

    def recording_masks(kind):
        calls.append(("step",))
        return real_masks(kind)

    monkeypatch.setattr(trainer, "dropout_masks", recording_masks)
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(write_csv(tmp_path / "train.csv", rows)),
             output_dir=str(tmp_path / "run"), batch_size=8, max_steps=3, report_plots=False, bootstrap_resamples=0)
    return calls


def test_asked_for_training_on_the_cpu_runs_its_steps_with_freed_memory_kept_and_restores_glibc_after(
        tiny_encoder, tmp_path, monkeypatch):
    calls = train_recording(tiny_encoder, tmp_path, monkeypatch, "1")
    kept = [("mallopt", host_memory.M_MMAP_MAX, 0), ("mallopt", host_memory.M_TRIM_THRESHOLD, -1)]
    restored = [("mallopt", host_memory.M_MMAP_MAX, 65536), ("mallopt", host_memory.M_TRIM_THRESHOLD, 128 * 1024),
                ("malloc_trim", 0)]
    assert calls == kept + [("step",)] * 3 + restored


@pytest.mark.parametrize("switch", [None, "0"])
def test_by_default_or_switched_off_training_leaves_glibc_alone(tiny_encoder, tmp_path, monkeypatch, switch):
    assert train_recording(tiny_encoder, tmp_path, monkeypatch, switch) == [("step",)] * 3
