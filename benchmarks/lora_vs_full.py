"""LoRA against full fine-tuning of the same encoder on the same data, in one run.

Each run trains with ``finetune-kit train`` in a child process of its own (peak RSS by
``wait4``) from the task cards in examples/ (SST-2: first 20,000 rows, 1 epoch, batch 32;
WNUT-17: 3 epochs, batch 16), once with full fine-tuning at the card's learning rate and once
with ``--lora`` (every linear layer of the transformer blocks, r=8, alpha=16) at ``--lora-lr``:
LoRA's low-rank updates need a larger step than full fine-tuning. Trainable parameters are
counted from what each run saved (all weights, or the adapter with the heads).

    python benchmarks/lora_vs_full.py                      # SST-2 and WNUT-17
    python benchmarks/lora_vs_full.py --only wnut17
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    add_rates,
    add_run_arguments,
    finetune_kit_training,
    machine,
    offline,
    packaged_encoder,
    print_table,
    run_measured,
    work_directory,
)

CARDS = {"sst2": ("examples/sst2.yaml", "validation", "accuracy"), "wnut17": ("examples/wnut17.yaml", "validation", "f1")}


def saved_parameters(model_dir: Path) -> int:
    """Parameters a run saved: every weight (full fine-tuning) or the adapter and heads (LoRA)."""
    from safetensors.torch import load_file

    adapter = model_dir / "adapter_model.safetensors"
    return sum(v.numel() for v in load_file(adapter if adapter.exists() else model_dir / "model.safetensors").values())


def run(name: str, card: str, out: Path, model: str, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "finetune_kit.cli", "train", str(REPO / card), f"model={model}",
               f"output_dir={out}", "overwrite=true", *extra]
    wall, rss = run_measured(name, command)
    return add_rates({**finetune_kit_training(out), "peak_rss_mib": rss, "process_wall_s": wall,
                      "trainable": saved_parameters(out)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(CARDS), nargs="+", default=list(CARDS))
    parser.add_argument("--lora-lr", type=float, default=5e-4, help="learning rate of the LoRA runs")
    add_run_arguments(parser)
    args = parser.parse_args()
    offline()
    model = args.model or packaged_encoder()
    work = work_directory(args.work_dir, "fk-bench-lora-")

    print(f"{machine()};"
          f" LoRA r=8 alpha=16 on every linear layer of the transformer blocks, lr {args.lora_lr}")
    everything = {}
    for name in args.only:
        card, split, metric = CARDS[name]
        results = {}
        for label, extra in (("full fine-tuning", []), ("LoRA", ["lora=true", f"learning_rate={args.lora_lr}"])):
            out = work / f"{name}-{label.split()[0].lower()}"
            results[label] = run(f"{name} {label}", card, out, model, extra)
            results[label]["score"] = json.loads((out / "metrics.json").read_text())[split][metric]
        print(f"\n{name}: dev {metric}")
        print_table(results, [("dev " + metric, "score", ".4f")], reference="full fine-tuning")
        for label, result in results.items():
            print(f"{label}: {result['trainable']:,} trainable parameters")
        everything[name] = results
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
