"""Where a training step's time goes: the top operators of a few optimizer steps, per task.

Each work trains with finetune-kit's own loop (``finetune_kit.train``) on its real data, under
``torch.profiler``; the profiler's schedule advances on every optimizer step (a global AdamW
step hook), so the profile holds whole steps: data loading and collation, forward, backward,
clipping, the optimizer, the scheduler. Evaluation is switched off. The table lists the
operators with the most self CPU time over the active steps, and how much of it went to the
linear layers (``addmm`` forward, ``mm`` backward), to attention (``bmm``, softmax, the fused
kernels), to the optimizer, and to no operator at all (``ProfilerStep*``'s own time: Python,
the data loader's collation, the loop's bookkeeping); and the rate (GFLOP/s, from the profiler's
FLOP count) the linear layers' and attention's products ran at, beside the square matmul peak
measured after the work's run in the same process.

    python benchmarks/profile_training.py                          # sst2, rte, wnut17, squad, genia
    python benchmarks/profile_training.py --only sst2 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PRECISIONS, SHARED, machine, matmul_peak_gflops, offline, packaged_encoder, work_directory  # noqa: E402

WORKS = {
    "sst2": {"task": "text-classification", "train_file": SHARED / "sst2" / "train.tsv", "text_column": "sentence",
             "label_column": "label", "batch_size": 32, "max_length": 128},
    "rte": {"task": "text-classification", "train_file": SHARED / "rte" / "train.tsv", "text_column": "sentence1",
            "text_pair_column": "sentence2", "label_column": "label", "batch_size": 32, "max_length": 128},
    "wnut17": {"task": "token-classification", "train_file": SHARED / "wnut17" / "wnut17train.conll",
               "batch_size": 16, "max_length": 128},
    "squad": {"task": "question-answering", "train_file": None, "batch_size": 16, "max_length": 384},
    "genia": {"task": "span-ner", "train_file": SHARED / "genia_nested" / "dev.json", "batch_size": 16,
              "max_length": 128},
}
# The linear layers' products (forward addmm, backward mm) and attention's own (batched products,
# softmax, the fused kernels).
LINEAR_OPS = ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise", "aten::_addmm_activation")
ATTENTION_MARKS = ("aten::bmm", "softmax", "scaled_dot_product")


def squad_train_file(work: Path) -> Path:
    from qa_vs_trainer import split_squad

    return split_squad(work, None, None)[0]


def profile_work(name: str, args: argparse.Namespace, work: Path) -> dict:
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    import finetune_kit as fk

    settings = dict(WORKS[name])
    if settings["train_file"] is None:
        settings["train_file"] = squad_train_file(work)
    steps = args.wait + args.warmup + args.active
    settings.update(model=args.model or packaged_encoder(), output_dir=str(work / name), overwrite=True,
                    epochs=1, max_steps=steps + 1, mixed_precision=args.mixed_precision, seed=42,
                    train_file=str(settings["train_file"]), save_total_limit=0)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True,
                 schedule=schedule(wait=args.wait, warmup=args.warmup, active=args.active, repeat=1)) as prof:
        handle = register_optimizer_step_post_hook(lambda *_: prof.step())
        try:
            fk.train(**settings)
        finally:
            handle.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]

    def share(predicate) -> float:
        return sum(e.self_cpu_time_total for e in events if predicate(e.key)) / max(total, 1)

    def gflops(names: tuple[str, ...]) -> float:
        """GFLOP/s of the named operators over their own time (the profiler's FLOP estimate)."""
        chosen = [e for e in events if e.key in names]
        seconds = sum(e.self_cpu_time_total for e in chosen) / 1e6
        return sum(e.flops for e in chosen) / seconds / 1e9 if seconds else 0.0

    return {
        "step_ms": total / 1000 / args.active,
        "threads": torch.get_num_threads(),
        "linear_share": share(lambda key: key in LINEAR_OPS),
        "linear_gflops": gflops(LINEAR_OPS),
        "attention_gflops": gflops(("aten::bmm",)),
        "attention_share": share(lambda key: any(mark in key for mark in ATTENTION_MARKS)),
        "host_share": share(lambda key: key.startswith("ProfilerStep")),
        "optimizer_share": share(lambda key: "adam" in key.lower() or "foreach" in key or "Optimizer" in key),
        "top": [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / args.active,
                 "share": e.self_cpu_time_total / max(total, 1), "calls_per_step": e.count / args.active}
                for e in top],
    }


def print_profile(name: str, result: dict, precision: str) -> None:
    print(f"\n{name} ({precision}, {result['threads']} threads): {result['step_ms']:.0f} ms of operator self "
          f"time per step; linear layers {result['linear_share']:.0%}, attention {result['attention_share']:.0%}, "
          f"optimizer {result['optimizer_share']:.0%}, outside any operator {result['host_share']:.0%}")
    print(f"linear layers' products ran at {result['linear_gflops']:.1f} GFLOP/s "
          f"({result['linear_gflops'] / result['peak_gflops']:.0%} of the square matmul peak, "
          f"{result['peak_gflops']:.1f}), attention's at {result['attention_gflops']:.1f}")
    print("| operator | self ms / step | share | calls / step |")
    print("|---|---|---|---|")
    for row in result["top"]:
        print(f"| `{row['op']}` | {row['self_ms_per_step']:.1f} | {row['share']:.1%} | {row['calls_per_step']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(WORKS), help=f"which of {','.join(WORKS)} [all]")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--wait", type=int, default=3, help="optimizer steps before the profiler warms up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--active", type=int, default=5, help="optimizer steps profiled")
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    parser.add_argument("--model", help="encoder directory [default: the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--work-dir")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    offline()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORKS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(WORKS)}")
    work = work_directory(args.work_dir, "profile-")
    print(machine())
    import torch

    peak_dtype = getattr(torch, PRECISIONS[args.mixed_precision][0])
    results = {}
    for name in names:
        results[name] = profile_work(name, args, work)
        results[name]["peak_gflops"] = matmul_peak_gflops(peak_dtype)
        print_profile(name, results[name], args.mixed_precision)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
