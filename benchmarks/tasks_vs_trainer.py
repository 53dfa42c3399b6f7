"""Multi-label classification (GoEmotions), regression (STS-B) and multiple choice
(CommonsenseQA), each trained twice in one run: with finetune-kit and with the Hugging Face
``Trainer`` recipe, same encoder, data and hyper-parameters; quality, speed and memory side by side.

The Trainer side is the recipe of the transformers examples: ``AutoModelForSequenceClassification``
with ``problem_type="multi_label_classification"`` (BCE) or ``"regression"`` (MSE, one output),
``AutoModelForMultipleChoice`` with ``DataCollatorForMultipleChoice``; tokenization without padding,
dynamic padding per batch, random batches, no evaluation during training. finetune-kit trains the
same transformers model classes through ``finetune-kit train`` (evaluating on the validation split
after each epoch and keeping the best weights), then ``finetune-kit predict`` writes its test
predictions. Both sides are scored by this script with the same functions:

- GoEmotions (train first N rows, dev, test): test macro-F1 at the paper's fixed 0.3 threshold,
  and at one global threshold tuned for dev macro-F1 (finetune-kit tunes its own after training;
  the Trainer side's is tuned here on its dev predictions over the same grid), micro-F1 at the
  tuned threshold. Files without a header: ``--column-names text,labels,id``.
- STS-B: trained on the first 90% of train (the last 10% is finetune-kit's validation split),
  scored on dev: Pearson and Spearman.
- CommonsenseQA: the same 90/10 cut of train, scored on dev (the test set has no answers):
  accuracy.

    python benchmarks/tasks_vs_trainer.py --preset stsb
    python benchmarks/tasks_vs_trainer.py --preset goemotions --max-train-samples 20000
    python benchmarks/tasks_vs_trainer.py --preset commonsenseqa --max-train-samples 500   # a quick look
    python benchmarks/tasks_vs_trainer.py --preset stsb --mixed-precision bf16   # both sides under bf16 autocast

Speed: training time, real and padded tokens/s, useful GFLOP/s (the real tokens' training FLOPs;
for multiple choice every (question, choice) sequence counts) and MFU (over the matmul peak
measured in this run, same dtype and threads).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

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

GOEMOTIONS, STSB, CSQA = SHARED / "goemotions", SHARED / "stsb", SHARED / "commonsenseqa"
PRESETS = {
    "goemotions": dict(task="multi-label-classification", epochs=1.0, batch_size=32, max_length=128,
                       quality=[("macro-F1 @0.3", "macro_f1_fixed", ".4f"), ("macro-F1 tuned", "macro_f1", ".4f"),
                                ("micro-F1 tuned", "micro_f1", ".4f")]),
    "stsb": dict(task="regression", epochs=3.0, batch_size=32, max_length=128,
                 quality=[("Pearson", "pearson", ".4f"), ("Spearman", "spearman", ".4f")]),
    "commonsenseqa": dict(task="multiple-choice", epochs=1.0, batch_size=16, max_length=64,
                          quality=[("accuracy", "accuracy", ".4f")]),
}
FIXED_THRESHOLD = 0.3  # the GoEmotions paper's
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
HELD_OUT = 0.1  # the share of STS-B's and CommonsenseQA's train kept for validation (the last rows)


# -- data, read the same way for both sides ------------------------------------------------------

def read_tsv(path: Path, names: list[str] | None = None) -> list[dict[str, str]]:
    """A TSV file without quote processing (GLUE's and GoEmotions' files need it); ``names`` for a
    file without a header."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    header, body = (names, rows) if names else (rows[0], rows[1:])
    return [dict(zip(header, row)) for row in body if row]


def first_part(rows: list, limit: int | None) -> list:
    """What finetune-kit's --validation-fraction 0.1 trains on: all but the last 10% (after
    --max-train-samples)."""
    rows = rows[:limit] if limit else rows
    return rows[: len(rows) - max(1, round(len(rows) * HELD_OUT))]


def emotion_names() -> list[str]:
    return (GOEMOTIONS / "emotions.txt").read_text(encoding="utf-8").split()


def multi_hot(ids: str, count: int) -> list[float]:
    hot = [0.0] * count
    for label in ids.split(","):
        hot[int(label)] = 1.0
    return hot


def csqa_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        choices = item["question"]["choices"]
        rows.append({"stem": item["question"]["stem"], "choices": [c["text"] for c in choices],
                     "answer": [c["label"] for c in choices].index(item["answerKey"])})
    return rows


# -- the shared scorers --------------------------------------------------------------------------

def macro_micro_f1(probabilities: np.ndarray, gold: np.ndarray, threshold: float) -> tuple[float, float]:
    predicted = probabilities >= threshold
    true_positives = (predicted & gold).sum(0)
    per_label = np.divide(2 * true_positives, predicted.sum(0) + gold.sum(0),
                          out=np.zeros(gold.shape[1]), where=(predicted.sum(0) + gold.sum(0)) > 0)
    micro = 2 * true_positives.sum() / max(1, predicted.sum() + gold.sum())
    return float(per_label.mean()), float(micro)


def tuned_threshold(probabilities: np.ndarray, gold: np.ndarray) -> float:
    scores = [macro_micro_f1(probabilities, gold, t)[0] for t in THRESHOLD_GRID]
    return float(THRESHOLD_GRID[int(np.argmax(scores))])


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2
        start = end + 1
    return ranks


def correlations(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {"pearson": float(np.corrcoef(predicted, gold)[0, 1]),
            "spearman": float(np.corrcoef(average_ranks(predicted), average_ranks(gold))[0, 1])}


def goemotions_quality(dev_probabilities: np.ndarray, test_probabilities: np.ndarray,
                       threshold: float | None = None) -> dict[str, float]:
    """Test macro-F1 at 0.3, and macro/micro-F1 at ``threshold`` (None: tuned on dev here)."""
    count = len(emotion_names())
    names = ["text", "labels", "id"]
    dev_gold = np.array([multi_hot(r["labels"], count) for r in read_tsv(GOEMOTIONS / "dev.tsv", names)]) > 0
    test_gold = np.array([multi_hot(r["labels"], count) for r in read_tsv(GOEMOTIONS / "test.tsv", names)]) > 0
    if threshold is None:
        threshold = tuned_threshold(dev_probabilities, dev_gold)
    macro, micro = macro_micro_f1(test_probabilities, test_gold, threshold)
    return {"macro_f1_fixed": macro_micro_f1(test_probabilities, test_gold, FIXED_THRESHOLD)[0],
            "macro_f1": macro, "micro_f1": micro, "threshold": threshold}


# -- the Trainer side (runs in a child process) --------------------------------------------------

def trainer_child(args: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForMultipleChoice,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForMultipleChoice,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    set_seed(args["seed"])
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    length = args["max_length"]
    preset = args["preset"]

    def texts(first: list[str], second: list[str] | None, labels: list) -> Dataset:
        encoded = tokenizer(first, second, truncation=True, max_length=length)
        return Dataset.from_dict({**encoded, "labels": labels})

    if preset == "goemotions":
        names, count = ["text", "labels", "id"], len(emotion_names())
        splits = {split: read_tsv(GOEMOTIONS / f"{split}.tsv", names) for split in ("train", "dev", "test")}
        splits["train"] = splits["train"][: args["max_train_samples"]] if args["max_train_samples"] else splits["train"]
        data = {split: texts([r["text"] for r in rows], None, [multi_hot(r["labels"], count) for r in rows])
                for split, rows in splits.items()}
        model = AutoModelForSequenceClassification.from_pretrained(
            args["model"], num_labels=count, problem_type="multi_label_classification")
        collator = DataCollatorWithPadding(tokenizer)
    elif preset == "stsb":
        train, dev = first_part(read_tsv(STSB / "train.tsv"), args["max_train_samples"]), read_tsv(STSB / "dev.tsv")
        data = {split: texts([r["sentence1"] for r in rows], [r["sentence2"] for r in rows],
                             [float(r["score"]) for r in rows]) for split, rows in (("train", train), ("dev", dev))}
        model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=1,
                                                                   problem_type="regression")
        collator = DataCollatorWithPadding(tokenizer)
    else:
        train = first_part(csqa_rows(CSQA / "train_rand_split.jsonl"), args["max_train_samples"])
        dev = csqa_rows(CSQA / "dev_rand_split.jsonl")

        def choices(rows: list[dict]) -> Dataset:
            features: dict[str, list] = {}
            for row in rows:
                encoded = tokenizer([row["stem"]] * len(row["choices"]), row["choices"], truncation=True,
                                    max_length=length)
                for key, value in encoded.items():
                    features.setdefault(key, []).append(value)
            return Dataset.from_dict({**features, "labels": [row["answer"] for row in rows]})

        data = {"train": choices(train), "dev": choices(dev)}
        model = AutoModelForMultipleChoice.from_pretrained(args["model"])
        collator = DataCollatorForMultipleChoice(tokenizer)

    flop_inputs = model_flop_inputs(model, model.config)
    counter = TokenCounter(collator)
    trainer = Trainer(model=model, args=reference_training_arguments(args), train_dataset=data["train"],
                      data_collator=counter)
    train_metrics = trainer.train().metrics
    counter.counting = False
    outputs = {split: trainer.predict(ds).predictions for split, ds in data.items() if split != "train"}
    if preset == "goemotions":
        quality = goemotions_quality(1 / (1 + np.exp(-outputs["dev"])), 1 / (1 + np.exp(-outputs["test"])))
    elif preset == "stsb":
        quality = correlations(outputs["dev"].reshape(-1), np.array([float(r["score"]) for r in dev]))
    else:
        quality = {"accuracy": float(np.mean(outputs["dev"].argmax(1) == np.array([r["answer"] for r in dev])))}
    return {"train_s": train_metrics["train_runtime"], "nonpad_tokens": counter.nonpad,
            "padded_tokens": counter.padded, "sum_sq_lengths": counter.squares, **flop_inputs,
            "precision": precision_label(trainer.accelerator.mixed_precision), **quality,
            "torch_threads": torch.get_num_threads()}


# -- the finetune-kit side: its CLI, in child processes ------------------------------------------

def finetune_kit_command(args: dict, out: Path) -> list[str]:
    preset = args["preset"]
    command = [sys.executable, "-m", "finetune_kit.cli", "train", "--task", PRESETS[preset]["task"],
               "--model", args["model"], "--output", str(out), "--epochs", str(args["epochs"]),
               "--batch-size", str(args["batch_size"]), "--learning-rate", str(args["learning_rate"]),
               "--max-length", str(args["max_length"]), "--seed", str(args["seed"]), "--warmup-ratio", "0",
               "--weight-decay", "0", "--overwrite", "--no-report-plots", *step_arguments(args)]
    if args["max_train_samples"]:
        command += ["--max-train-samples", str(args["max_train_samples"])]
    for option in args["task_option"]:
        command += ["-o", option]
    if preset == "goemotions":
        command += ["--train", str(GOEMOTIONS / "train.tsv"), "--validation", str(GOEMOTIONS / "dev.tsv"),
                    "--column-names", "text,labels,id", "--label-column", "labels",
                    "-o", "label_separator=,", "-o", f"label_names={GOEMOTIONS / 'emotions.txt'}"]
    elif preset == "stsb":
        command += ["--train", str(STSB / "train.tsv"), "--validation-fraction", str(HELD_OUT),
                    "--text-column", "sentence1", "--text-pair-column", "sentence2", "--label-column", "score"]
    else:
        command += ["--train", str(CSQA / "train_rand_split.jsonl"), "--validation-fraction", str(HELD_OUT)]
    return command


def predict_command(out: Path, data: Path, predictions: Path) -> list[str]:
    return [sys.executable, "-m", "finetune_kit.cli", "predict", str(out), "--input", str(data),
            "--output", str(predictions)]


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def finetune_kit_quality(args: dict, out: Path, work: Path) -> dict:
    """The shared scorers on finetune-kit's predictions (``finetune-kit predict``, not timed)."""
    preset = args["preset"]
    if preset == "goemotions":
        names = emotion_names()
        probabilities = {}
        for split in ("dev", "test"):
            path = work / f"fk-{split}.jsonl"
            run_measured(f"finetune-kit predict {split}", predict_command(out, GOEMOTIONS / f"{split}.tsv", path))
            probabilities[split] = np.array([[p["scores"][name] for name in names] for p in read_predictions(path)])
        threshold = json.loads((out / "finetune_kit.json").read_text())["task_state"]["threshold"]
        return goemotions_quality(probabilities["dev"], probabilities["test"], threshold)
    path = work / "fk-dev.jsonl"
    if preset == "stsb":
        run_measured("finetune-kit predict dev", predict_command(out, STSB / "dev.tsv", path))
        predicted = np.array([p["value"] for p in read_predictions(path)])
        return correlations(predicted, np.array([float(r["score"]) for r in read_tsv(STSB / "dev.tsv")]))
    run_measured("finetune-kit predict dev", predict_command(out, CSQA / "dev_rand_split.jsonl", path))
    chosen = np.array([p["choice"] for p in read_predictions(path)])
    return {"accuracy": float(np.mean(chosen == np.array([r["answer"] for r in csqa_rows(CSQA / "dev_rand_split.jsonl")])))}


# -- running both and printing -------------------------------------------------------------------

def measure(name: str, args: dict, work: Path) -> dict:
    if name == "finetune-kit":
        out = work / "finetune-kit"
        wall, rss = run_measured(name, finetune_kit_command(args, out))
        result = {**finetune_kit_training(out, flops=True), **finetune_kit_quality(args, out, work)}
    else:
        result_file = work / "trainer.json"
        child_args = {**args, "work_dir": str(work / "trainer"), "result_file": str(result_file)}
        wall, rss = run_measured("HF Trainer recipe", [sys.executable, __file__, "--trainer-child",
                                                       json.dumps(child_args)])
        result = json.loads(result_file.read_text())
    return add_rates({**result, "peak_rss_mib": rss, "process_wall_s": wall})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--max-train-samples", type=int, help="train on the first N rows [default: all]")
    parser.add_argument("--epochs", type=float, help="[default: the preset's]")
    parser.add_argument("--batch-size", type=int, help="[default: the preset's]")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, help="[default: the preset's]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--task-option", "-o", action="append", default=[],
                        help="a finetune-kit task option, e.g. -o prior_bias=false")
    parser.add_argument("--only", choices=["finetune-kit", "trainer"])
    add_precision_argument(parser)
    add_run_arguments(parser)
    parser.add_argument("--trainer-child", help=argparse.SUPPRESS)
    ns = parser.parse_args() if "--trainer-child" not in sys.argv else None
    if ns is None:
        child_args = json.loads(sys.argv[sys.argv.index("--trainer-child") + 1])
        result = trainer_child(child_args)
        Path(child_args["result_file"]).write_text(json.dumps(result))
        return

    preset = PRESETS[ns.preset]
    args = {"preset": ns.preset, "max_train_samples": ns.max_train_samples, "learning_rate": ns.learning_rate,
            "seed": ns.seed, "model": ns.model or packaged_encoder(), "task_option": ns.task_option,
            "mixed_precision": ns.mixed_precision, "dropout_masks": ns.dropout_masks,
            **{key: getattr(ns, key) or preset[key] for key in ("epochs", "batch_size", "max_length")}}
    offline()
    print(f"{machine()}, {os.cpu_count()} CPUs; {ns.preset} (first {args['max_train_samples'] or 'all'} training "
          f"rows), {args['epochs']:g} epoch(s), batch {args['batch_size']}, lr {args['learning_rate']}, "
          f"max length {args['max_length']}, seed {args['seed']}, {step_label(args)}")
    start_peaks = matmul_peaks()
    work = work_directory(ns.work_dir, "fk-bench-")
    sides = {"finetune-kit": "finetune-kit", "HF Trainer recipe": "trainer"}
    results = {label: measure(name, args, work) for label, name in sides.items() if ns.only in (None, name)}
    print()
    peaks = add_mfu(results, start_peaks, args["mixed_precision"])
    print_table(results, preset["quality"], reference="HF Trainer recipe")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"settings": args, "matmul_peak_gflops": peaks, "results": results},
                                                indent=2))


if __name__ == "__main__":
    main()
