"""Train the same classifier twice in one run, with finetune-kit and with the standard Hugging
Face ``Trainer`` recipe, and print speed and quality side by side.

Both sides train the same model (the encoder, its pretrained pooler on [CLS], dropout and a
linear layer: finetune-kit's ``pooling=pooler`` head is the head of transformers'
``BertForSequenceClassification``) on the same data, with the same hyper-parameters and threads.
The Trainer side is the recipe of the transformers examples: ``AutoModelForSequenceClassification``,
tokenization without padding, ``DataCollatorWithPadding`` (dynamic padding per batch), random
batches.
Each side runs in a child process of its own, so its peak memory is its own (``os.wait4``).

Figures: training wall time (training only, no evaluation), non-padding tokens/s (real tokens),
padded tokens/s (every batch position), the share of padding, useful GFLOP/s (the real tokens'
training FLOPs) and MFU (over the matmul peak measured in this run, same dtype and threads), peak
RSS and dev accuracy. ``--mixed-precision bf16`` runs both sides under bf16 autocast.

    python benchmarks/classification_vs_trainer.py --preset sst2
    python benchmarks/classification_vs_trainer.py --preset rte
    python benchmarks/classification_vs_trainer.py --preset sst2 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHARED,
    TokenCounter,
    add_mfu,
    add_precision_argument,
    add_rates,
    add_run_arguments,
    finetune_kit_training,
    machine,
    matmul_peaks,
    model_flop_inputs,
    offline,
    packaged_encoder,
    precision_label,
    print_table,
    reference_training_arguments,
    run_measured,
    step_arguments,
    step_label,
    work_directory,
)

QUALITY = [("dev acc", "accuracy", ".4f")]
PRESETS = {
    "sst2": dict(train=SHARED / "sst2" / "train.tsv", validation=SHARED / "sst2" / "dev.tsv",
                 text_column="sentence", text_pair_column=None, max_train_samples=20000, epochs=1.0),
    "rte": dict(train=SHARED / "rte" / "train.tsv", validation=SHARED / "rte" / "dev.tsv",
                text_column="sentence1", text_pair_column="sentence2", max_train_samples=None, epochs=3.0),
}


# -- the Trainer side (runs in a child process) ----------------------------------------------

def read_tsv(path: str, limit: int | None) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[:limit] if limit else rows


def trainer_child(args: dict) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    set_seed(args["seed"])
    train_rows = read_tsv(args["train"], args["max_train_samples"])
    dev_rows = read_tsv(args["validation"], None)
    labels = sorted({r[args["label_column"]] for r in train_rows})
    label_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=len(labels))

    def encode(rows: list[dict[str, str]]) -> Dataset:
        first = [r[args["text_column"]] for r in rows]
        second = [r[args["text_pair_column"]] for r in rows] if args["text_pair_column"] else None
        encoded = tokenizer(first, second, truncation=True, max_length=args["max_length"])
        return Dataset.from_dict({**encoded, "labels": [label_id[r[args["label_column"]]] for r in rows]})

    flop_inputs = model_flop_inputs(model, model.config)
    counter = TokenCounter(DataCollatorWithPadding(tokenizer))
    trainer = Trainer(model=model, args=reference_training_arguments(args), train_dataset=encode(train_rows),
                      data_collator=counter)
    train_metrics = trainer.train().metrics
    counter.counting = False
    predictions = trainer.predict(encode(dev_rows))
    accuracy = float(np.mean(np.argmax(predictions.predictions, axis=1) == predictions.label_ids))
    return {"train_s": train_metrics["train_runtime"], "nonpad_tokens": counter.nonpad,
            "padded_tokens": counter.padded, "sum_sq_lengths": counter.squares, **flop_inputs,
            "precision": precision_label(trainer.accelerator.mixed_precision), "accuracy": accuracy,
            "torch_threads": torch.get_num_threads()}


# -- the finetune-kit side: its CLI, in a child process ---------------------------------------

def finetune_kit_command(args: dict, out: Path) -> list[str]:
    task = "pair-classification" if args["text_pair_column"] else "text-classification"
    command = [sys.executable, "-m", "finetune_kit.cli", "train", "--task", task, "--model", args["model"],
               "--train", args["train"], "--validation", args["validation"], "--output", str(out),
               "--epochs", str(args["epochs"]), "--batch-size", str(args["batch_size"]),
               "--learning-rate", str(args["learning_rate"]), "--max-length", str(args["max_length"]),
               "--seed", str(args["seed"]), "--warmup-ratio", "0", "--weight-decay", "0",
               "--text-column", args["text_column"], "--label-column", args["label_column"], "--overwrite",
               *step_arguments(args)]
    if args["text_pair_column"]:
        command += ["--text-pair-column", args["text_pair_column"]]
    if args["max_train_samples"]:
        command += ["--max-train-samples", str(args["max_train_samples"])]
    for option in args["task_option"]:
        command += ["-o", option]
    return command


def read_finetune_kit_result(out: Path) -> dict:
    accuracy = json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]
    return {**finetune_kit_training(out, flops=True), "accuracy": accuracy}


# -- running both and printing ----------------------------------------------------------------

def measure(name: str, args: dict, work: Path) -> dict:
    if name == "finetune-kit":
        out = work / "finetune-kit"
        wall, rss = run_measured(name, finetune_kit_command(args, out))
        result = read_finetune_kit_result(out)
    else:
        result_file = work / "trainer.json"
        child_args = {**args, "work_dir": str(work / "trainer"), "result_file": str(result_file)}
        wall, rss = run_measured("HF Trainer recipe", [sys.executable, __file__, "--trainer-child",
                                                       json.dumps(child_args)])
        result = json.loads(result_file.read_text())
    return add_rates({**result, "peak_rss_mib": rss, "process_wall_s": wall})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="fill data, columns and epochs")
    parser.add_argument("--train")
    parser.add_argument("--validation")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--text-pair-column")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--epochs", type=float, help="[default: the preset's, else 1]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--task-option", "-o", action="append", default=None,
                        help="finetune-kit task option [default: pooling=pooler, the head of the Trainer "
                             "recipe's AutoModelForSequenceClassification, so both train the same model]")
    parser.add_argument("--only", choices=["finetune-kit", "trainer"])
    add_precision_argument(parser)
    add_run_arguments(parser)
    parser.add_argument("--trainer-child", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.trainer_child:
        child_args = json.loads(ns.trainer_child)
        result = trainer_child(child_args)
        Path(child_args["result_file"]).write_text(json.dumps(result))
        return

    args = {k: v for k, v in vars(ns).items() if k not in ("preset", "only", "work_dir", "json_out", "trainer_child")}
    if ns.preset:
        for key, value in PRESETS[ns.preset].items():
            if key in ("max_train_samples", "epochs") and args[key] is not None:
                continue  # given on the command line
            args[key] = str(value) if isinstance(value, Path) else value
    args["epochs"] = args["epochs"] or 1.0
    args["task_option"] = args["task_option"] if args["task_option"] is not None else ["pooling=pooler"]
    if not args["train"] or not args["validation"]:
        parser.error("give --preset or --train and --validation")
    args["model"] = args["model"] or packaged_encoder()
    offline()

    print(f"{machine()}, "
          f"{os.cpu_count()} CPUs; data {args['train']} (first {args['max_train_samples'] or 'all'} rows), "
          f"{args['epochs']:g} epoch(s), batch {args['batch_size']}, lr {args['learning_rate']}, "
          f"max length {args['max_length']}, seed {args['seed']}, "
          f"{step_label(args)}")
    start_peaks = matmul_peaks()
    work = work_directory(ns.work_dir, "fk-bench-")
    sides = {"finetune-kit": "finetune-kit", "HF Trainer recipe": "trainer"}
    results = {label: measure(name, args, work) for label, name in sides.items() if ns.only in (None, name)}
    print()
    peaks = add_mfu(results, start_peaks, args["mixed_precision"])
    print_table(results, QUALITY, reference="HF Trainer recipe")
    if len(results) == 2:
        ours, ref = results["finetune-kit"], results["HF Trainer recipe"]
        print(f"\nfinetune-kit trains {ours['nonpad_tok_s'] / ref['nonpad_tok_s']:.2f}x the Trainer recipe's "
              f"non-padding tokens/s (MFU {ours['mfu']:.1%} vs {ref['mfu']:.1%}); dev accuracy "
              f"{ours['accuracy']:.4f} vs {ref['accuracy']:.4f} "
              f"({(ours['accuracy'] - ref['accuracy']) * 100:+.2f} points).")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"settings": args, "matmul_peak_gflops": peaks, "results": results},
                                                indent=2))


if __name__ == "__main__":
    main()
