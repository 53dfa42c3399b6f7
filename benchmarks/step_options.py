"""What each candidate change to the training step buys: finetune-kit's own training run on one
work, once per variant, each in its own process, side by side with the default run.

The variants are the candidates of a faster step that need no change to the model's arithmetic:

- ``default``: finetune-kit as shipped.
- ``threads-1``: one torch thread (``torch.set_num_threads(1)``) instead of one per core.
- ``loader-worker``: one DataLoader worker process collating the next batches while the step runs.
- ``eager-attention``: the encoder's attention as written in Python (``attn_implementation="eager"``)
  instead of PyTorch's fused ``scaled_dot_product_attention`` (transformers' default).
- ``compile``: ``torch.compile`` of the whole model with dynamic shapes through Accelerate
  (``ACCELERATE_DYNAMO_BACKEND=inductor``, ``ACCELERATE_DYNAMO_USE_DYNAMIC=1``; the same as
  ``accelerate launch --dynamo_backend inductor --dynamo_use_dynamic``). The compile time falls in
  the first steps and is counted in the training time.
- ``compile-regional``: the same, each encoder layer compiled once and reused
  (``ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION=1``).
- ``torch-dropout-masks``: ``--dropout-masks torch`` (torch's ``bernoulli_`` masks instead of the
  default 16-bit draws); the masks differ for a seed, so quality moves within the seed spread.
- ``pad-16``: every batch padded to a multiple of 16 tokens (fewer distinct shapes: the allocator
  and oneDNN see the same sizes again), at the cost of some padding.
- ``fresh-embedding-gradient``: torch's embedding backward, a new zero gradient the size of the
  embedding matrix at every step, instead of the buffer kept across steps
  (``finetune_kit/embedding_gradient.py``, the default on a single CPU process).
- ``heap-thresholds-as-found``: glibc's mmap and trim thresholds left where the process found them
  instead of raised to where glibc's own adjustment ends (``host_memory.raise_heap_thresholds``).
- ``fresh-gradient-pages``: both of the last two: every step's gradients in fresh pages, as before
  2026-12-04.

    python benchmarks/step_options.py                                   # SST-2 4k, fp32
    python benchmarks/step_options.py --mixed-precision bf16
    python benchmarks/step_options.py --preset rte --epochs 1 --variants default pad-16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classification_vs_trainer import (  # noqa: E402
    PRESETS,
    QUALITY,
    finetune_kit_command,
    read_finetune_kit_result,
)
from common import (  # noqa: E402
    add_mfu,
    add_precision_argument,
    add_rates,
    add_run_arguments,
    machine,
    matmul_peaks,
    offline,
    packaged_encoder,
    print_table,
    run_measured,
    step_label,
    work_directory,
)

COMPILE = {"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR", "ACCELERATE_DYNAMO_USE_DYNAMIC": "true"}
# variant -> environment of its child (the patches are applied in the child, ``apply_variant``)
VARIANTS = {
    "default": {},
    "threads-1": {},
    "loader-worker": {},
    "eager-attention": {},
    "compile": COMPILE,
    "compile-regional": {**COMPILE, "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "true"},
    "torch-dropout-masks": {},
    "pad-16": {},
    "fresh-embedding-gradient": {},
    "heap-thresholds-as-found": {},
    "fresh-gradient-pages": {},
}


def apply_variant(variant: str) -> None:
    """In the child process, before finetune-kit's CLI runs: change the one thing ``variant`` names."""
    import torch

    if variant == "threads-1":
        torch.set_num_threads(1)
    elif variant == "loader-worker":
        import finetune_kit.trainer

        finetune_kit.trainer.DataLoader = partial(torch.utils.data.DataLoader, num_workers=1, prefetch_factor=4,
                                                  persistent_workers=True)
    elif variant == "eager-attention":
        import finetune_kit.modeling

        load = finetune_kit.modeling._from_pretrained

        def eager(loader, name, what, trust_remote_code=False, **kwargs):
            if getattr(loader, "__name__", "") == "AutoModel":
                kwargs["attn_implementation"] = "eager"
            return load(loader, name, what, trust_remote_code, **kwargs)

        finetune_kit.modeling._from_pretrained = eager
    elif variant in ("fresh-embedding-gradient", "heap-thresholds-as-found", "fresh-gradient-pages"):
        import finetune_kit.trainer

        if variant != "heap-thresholds-as-found":
            finetune_kit.trainer.kept_embedding_gradients = lambda model: nullcontext()
        if variant != "fresh-embedding-gradient":
            finetune_kit.trainer.raise_heap_thresholds = lambda: None
    elif variant == "pad-16":
        from finetune_kit.batching import InputPadder

        made = InputPadder.__init__

        def padding_to_16(self, *args, **kwargs):
            made(self, *args, **kwargs)
            self._collator.pad_to_multiple_of = 16

        InputPadder.__init__ = padding_to_16


def child(variant: str, cli_args: list[str]) -> None:
    apply_variant(variant)
    from finetune_kit.cli import main as cli_main

    sys.argv = ["finetune-kit", *cli_args]
    cli_main()


def measure(variant: str, args: dict, work: Path) -> dict:
    out = work / variant
    if variant == "torch-dropout-masks":
        args = {**args, "dropout_masks": "torch"}
    command = finetune_kit_command(args, out)
    cli_args = command[command.index("finetune_kit.cli") + 1:]
    saved = dict(os.environ)
    os.environ.update(VARIANTS[variant])
    try:
        wall, rss = run_measured(variant, [sys.executable, __file__, "--child", variant, "--", *cli_args])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return add_rates({**read_finetune_kit_result(out), "peak_rss_mib": rss, "process_wall_s": wall})


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sst2")
    parser.add_argument("--max-train-samples", type=int, help="[default: 4000 for sst2, all for rte]")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    add_precision_argument(parser)
    add_run_arguments(parser)
    ns = parser.parse_args()
    offline()
    preset = {k: str(v) if isinstance(v, Path) else v for k, v in PRESETS[ns.preset].items()}
    args = {**preset, "label_column": "label", "max_length": 128, "task_option": ["pooling=pooler"],
            "epochs": ns.epochs, "batch_size": ns.batch_size, "learning_rate": ns.learning_rate, "seed": ns.seed,
            "mixed_precision": ns.mixed_precision, "dropout_masks": ns.dropout_masks, "model": ns.model or packaged_encoder(),
            "max_train_samples": ns.max_train_samples or (4000 if ns.preset == "sst2" else None)}
    print(f"{machine()}; {ns.preset} (first {args['max_train_samples'] or 'all'} rows), {ns.epochs:g} epoch(s), "
          f"batch {ns.batch_size}, seed {ns.seed}, {step_label(args)}")
    start_peaks = matmul_peaks()
    work = work_directory(ns.work_dir, "fk-bench-step-")
    variants = ["default", *[v for v in ns.variants if v != "default"]]
    results = {variant: measure(variant, args, work) for variant in variants}
    print()
    peaks = add_mfu(results, start_peaks, ns.mixed_precision)
    print_table(results, QUALITY, reference="default")
    print("\nwhole process (loading, compiling, training, evaluating) s: "
          + ", ".join(f"{variant} {r['process_wall_s']:.1f}" for variant, r in results.items()))
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"settings": args, "matmul_peak_gflops": peaks, "results": results},
                                                indent=2))


if __name__ == "__main__":
    main()
