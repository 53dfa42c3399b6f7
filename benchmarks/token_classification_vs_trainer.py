"""Train a BIO tagger with finetune-kit (softmax head, and with a CRF) and with the standard
Hugging Face ``run_ner`` recipe in one run, and print quality and speed side by side.

The Trainer side is the recipe of the transformers examples: ``AutoModelForTokenClassification``,
words tokenized with ``is_split_into_words`` and truncated at ``max_length``, the word's label on
its first subword and -100 elsewhere, ``DataCollatorForTokenClassification`` (dynamic padding),
random batches, the final weights scored with seqeval on the first subword of every word that
survived truncation. finetune-kit trains the same encoder + dropout + linear head with the same
hyper-parameters, keeps the weights of the best validation F1, and predicts every word (long
sentences are windowed). Each side runs in a child process of its own (peak memory by ``wait4``).
Speed: training time, real and padded tokens/s, useful GFLOP/s (the real tokens' training FLOPs)
and MFU (over the matmul peak measured in this run, same dtype and threads).
``--mixed-precision bf16`` runs every side under bf16 autocast (the Trainer with ``bf16=True``).

    python benchmarks/token_classification_vs_trainer.py                 # WNUT-17, 3 epochs
    python benchmarks/token_classification_vs_trainer.py --max-train-samples 300 --epochs 1   # a quick look
    python benchmarks/token_classification_vs_trainer.py --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
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

WNUT = SHARED / "wnut17"
QUALITY = [("test F1 strict", "test_f1_strict", ".4f"), ("test F1 default", "test_f1_default", ".4f"),
           ("dev F1 strict", "dev_f1_strict", ".4f")]


# -- the Trainer side (runs in a child process) ----------------------------------------------

def read_conll(path: str, limit: int | None = None) -> list[tuple[list[str], list[str]]]:
    """Sentences of (tokens, last-column tags); blank or white-space-only lines separate them."""
    sentences, tokens, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        cells = line.rstrip("\r\n").split("\t")
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(cells[0])
        tags.append(cells[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences[:limit] if limit else sentences


def trainer_child(args: dict) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        set_seed,
    )

    set_seed(args["seed"])
    train = read_conll(args["train"], args["max_train_samples"])
    labels = sorted({t for _, tags in train for t in tags})
    label_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForTokenClassification.from_pretrained(args["model"], num_labels=len(labels))

    def encode(sentences: list[tuple[list[str], list[str]]]) -> Dataset:
        encoded = tokenizer([s for s, _ in sentences], truncation=True, max_length=args["max_length"],
                            is_split_into_words=True)
        all_labels = []
        for k, (_, tags) in enumerate(sentences):
            previous, row = None, []
            for word in encoded.word_ids(k):
                row.append(-100 if word is None or word == previous else label_id.get(tags[word], 0))
                previous = word
            all_labels.append(row)
        return Dataset.from_dict({**encoded, "labels": all_labels})

    flop_inputs = model_flop_inputs(model, model.config)
    counter = TokenCounter(DataCollatorForTokenClassification(tokenizer))
    trainer = Trainer(model=model, args=reference_training_arguments(args), train_dataset=encode(train),
                      data_collator=counter)
    train_metrics = trainer.train().metrics
    counter.counting = False

    def score(path: str) -> tuple[float, float, int]:
        sentences = read_conll(path)
        output = trainer.predict(encode(sentences))
        predictions = np.argmax(output.predictions, axis=2)
        gold, predicted, dropped = [], [], 0
        for k, (tokens, _) in enumerate(sentences):
            keep = [(labels[p], labels[g]) for p, g in zip(predictions[k], output.label_ids[k]) if g != -100]
            predicted.append([p for p, _ in keep])
            gold.append([g for _, g in keep])
            dropped += len(tokens) - len(keep)
        return (f1_score(gold, predicted, mode="strict", scheme=IOB2), f1_score(gold, predicted), dropped)

    test_strict, test_default, dropped = score(args["test"])
    dev_strict, _, _ = score(args["validation"])
    return {"train_s": train_metrics["train_runtime"], "nonpad_tokens": counter.nonpad,
            "padded_tokens": counter.padded, "sum_sq_lengths": counter.squares, **flop_inputs,
            "precision": precision_label(trainer.accelerator.mixed_precision), "test_f1_strict": test_strict,
            "test_f1_default": test_default, "dev_f1_strict": dev_strict, "test_words_dropped": dropped,
            "torch_threads": torch.get_num_threads()}


# -- the finetune-kit side: its CLI, in a child process ---------------------------------------

def finetune_kit_command(args: dict, out: Path, crf: bool) -> list[str]:
    command = [sys.executable, "-m", "finetune_kit.cli", "train", "--task", "token-classification",
               "--model", args["model"], "--train", args["train"], "--validation", args["validation"],
               "--test", args["test"], "--output", str(out), "--epochs", str(args["epochs"]),
               "--batch-size", str(args["batch_size"]), "--learning-rate", str(args["learning_rate"]),
               "--max-length", str(args["max_length"]), "--seed", str(args["seed"]), "--warmup-ratio", "0",
               "--weight-decay", "0", "--overwrite", *step_arguments(args)]
    if args["max_train_samples"]:
        command += ["--max-train-samples", str(args["max_train_samples"])]
    return command + (["--crf"] if crf else [])


def read_finetune_kit_result(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {**finetune_kit_training(out, flops=True), "test_f1_strict": metrics["test"]["f1"],
            "test_f1_default": metrics["test"]["default_mode"]["f1"], "dev_f1_strict": metrics["validation"]["f1"],
            "test_words_dropped": 0}


def measure(name: str, args: dict, work: Path) -> dict:
    if name == "trainer":
        result_file = work / "trainer.json"
        child_args = {**args, "work_dir": str(work / "trainer"), "result_file": str(result_file)}
        wall, rss = run_measured("HF Trainer recipe", [sys.executable, __file__, "--trainer-child",
                                                       json.dumps(child_args)])
        result = json.loads(result_file.read_text())
    else:
        out = work / name
        wall, rss = run_measured(name, finetune_kit_command(args, out, crf=name.endswith("crf")))
        result = read_finetune_kit_result(out)
    return add_rates({**result, "peak_rss_mib": rss, "process_wall_s": wall})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=str(WNUT / "wnut17train.conll"))
    parser.add_argument("--validation", default=str(WNUT / "emerging.dev.conll"))
    parser.add_argument("--test", default=str(WNUT / "emerging.test.annotated"))
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", choices=["finetune-kit", "finetune-kit crf", "trainer"], action="append")
    add_precision_argument(parser)
    add_run_arguments(parser)
    parser.add_argument("--trainer-child", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.trainer_child:
        child_args = json.loads(ns.trainer_child)
        Path(child_args["result_file"]).write_text(json.dumps(trainer_child(child_args)))
        return

    args = {k: v for k, v in vars(ns).items() if k not in ("only", "work_dir", "json_out", "trainer_child")}
    args["model"] = args["model"] or packaged_encoder()
    offline()

    print(f"{machine()}; train {args['train']} "
          f"(first {args['max_train_samples'] or 'all'} sentences), {args['epochs']:g} epoch(s), "
          f"batch {args['batch_size']}, lr {args['learning_rate']}, max length {args['max_length']}, "
          f"seed {args['seed']}, {step_label(args)}")
    start_peaks = matmul_peaks()
    work = work_directory(ns.work_dir, "fk-bench-ner-")
    labels = {"finetune-kit": "finetune-kit", "finetune-kit crf": "finetune-kit --crf", "trainer": "HF Trainer recipe"}
    results = {labels[name]: measure(name, args, work) for name in labels if not ns.only or name in ns.only}
    print()
    peaks = add_mfu(results, start_peaks, args["mixed_precision"])
    print_table(results, QUALITY, reference="HF Trainer recipe")
    if "HF Trainer recipe" in results:
        print(f"\nwords the Trainer recipe left unscored on test (truncated at {args['max_length']} subwords): "
              f"{results['HF Trainer recipe']['test_words_dropped']}; finetune-kit predicts every word.")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"settings": args, "matmul_peak_gflops": peaks, "results": results},
                                                indent=2))


if __name__ == "__main__":
    main()
