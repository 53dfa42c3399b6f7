"""What fresh pages cost a training step's large tensors, and what keeping freed memory buys.

glibc maps a block above 32 MiB anew at every allocation and unmaps it when freed, so a tensor
of that size meets fresh pages each step and pays a page fault per 4 KiB on first touch. This
times, in one process, the element-wise passes attention makes over a batch of SQuAD windows'
scores (16 x 12 x 384 x 384: the mask's addition, the softmax, dropout's ``where``) and the
zeroed embedding gradient (30522 x 384 fp32) with glibc's defaults, then inside
``finetune_kit.host_memory.reusing_freed_memory`` (what finetune-kit's training loop runs in on
the CPU with ``FINETUNE_KIT_KEEP_FREED_MEMORY=1``). Each figure is the best of ``--repeats``
calls, each allocating its result anew, as a training step does.

    python benchmarks/host_memory.py
    python benchmarks/host_memory.py --length 128      # RTE-sized: 6 MiB in bf16, under 32 MiB
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from finetune_kit.host_memory import can_keep_freed_memory, reusing_freed_memory  # noqa: E402


def best_ms(work: Callable[[], torch.Tensor], repeats: int) -> float:
    work(), work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def passes(batch: int, heads: int, length: int, dtype: torch.dtype, vocabulary: int,
           hidden: int) -> dict[str, Callable[[], torch.Tensor]]:
    scores = torch.randn(batch, heads, length, length).to(dtype)
    mask = torch.zeros(batch, 1, 1, length, dtype=dtype)
    keep = torch.rand(batch, heads, length, length) > 0.1
    return {
        "scores + mask": lambda: scores + mask,
        "softmax": lambda: torch.softmax(scores, -1),
        "dropout's where": lambda: torch.where(keep, scores, 0.0),
        "embedding gradient zeros (fp32)": lambda: torch.zeros(vocabulary, hidden),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--vocabulary", type=int, default=30522)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not can_keep_freed_memory():
        sys.exit("reusing_freed_memory changes nothing here (not glibc, or malloc tuned through MALLOC_*_ / "
                 "GLIBC_TUNABLES): nothing to compare")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    work = passes(args.batch, args.heads, args.length, dtype, args.vocabulary, args.hidden)
    size_mib = args.batch * args.heads * args.length ** 2 * dtype.itemsize / 2 ** 20
    print(machine())
    print(f"scores {args.batch} x {args.heads} x {args.length} x {args.length} {args.dtype} ({size_mib:.0f} MiB); "
          f"best of {args.repeats}, ms")
    default = {name: best_ms(run, args.repeats) for name, run in work.items()}
    with reusing_freed_memory():
        kept = {name: best_ms(run, args.repeats) for name, run in work.items()}
    print(f"\n{'pass':<34}{'glibc default':>15}{'freed memory kept':>20}{'ratio':>8}")
    for name in work:
        print(f"{name:<34}{default[name]:>15.1f}{kept[name]:>20.1f}{kept[name] / default[name]:>7.2f}x")


if __name__ == "__main__":
    main()
