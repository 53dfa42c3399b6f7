"""Train an extractive QA model with finetune-kit and with the Hugging Face ``run_qa`` recipe in
one run, and print quality, speed and memory side by side.

Data: SQuAD v1.1 dev split by article (the only SQuAD v1.1 file here): the first 38 articles to
train on, the last 10 to evaluate on. The Trainer side is the recipe of the transformers
examples: ``AutoModelForQuestionAnswering``, question + context windows (``truncation=
"only_second"``, ``max_length``, ``doc_stride``, overflowing tokens, offsets), start/end labels
or [CLS], ``DataCollatorWithPadding`` (dynamic padding), random batches, n-best (20) search over
the windows with answers of at most 30 tokens. finetune-kit trains the same encoder + linear
start/end head with the same hyper-parameters. Both are scored with the same SQuAD EM/F1.
Speed: training time, real and padded tokens/s, useful GFLOP/s (the real tokens' training FLOPs)
and MFU (over the matmul peak measured in this run, same dtype and threads).
``--mixed-precision bf16`` runs both sides under bf16 autocast (the Trainer with ``bf16=True``).

    python benchmarks/qa_vs_trainer.py                                   # 1 epoch, both sides
    python benchmarks/qa_vs_trainer.py --max-train-samples 500 --max-eval-samples 300   # a quick look
    python benchmarks/qa_vs_trainer.py --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
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

SQUAD = SHARED / "squad_v1.1" / "dev-v1.1.json"
QUALITY = [("EM", "exact_match", ".4f"), ("F1", "f1", ".4f")]


def split_squad(work: Path, max_train: int | None, max_eval: int | None) -> tuple[Path, Path]:
    """Articles 1-38 and 39-48 of the SQuAD v1.1 dev file, cut to the first N questions if asked."""
    sys.path.insert(0, str(REPO / "examples"))
    from squad_articles import select_articles

    paths = []
    for name, span, limit in (("train", "1-38", max_train), ("eval", "39-48", max_eval)):
        document = select_articles([f"{SQUAD}:{span}"])
        if limit:
            kept, data = 0, []
            for article in document["data"]:
                paragraphs = []
                for paragraph in article["paragraphs"]:
                    qas = paragraph["qas"][: max(0, limit - kept)]
                    kept += len(qas)
                    if qas:
                        paragraphs.append({**paragraph, "qas": qas})
                if paragraphs:
                    data.append({**article, "paragraphs": paragraphs})
            document["data"] = data
        path = work / f"{name}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


# -- the Trainer side (runs in a child process) ----------------------------------------------

def squad_rows(path: str) -> list[dict]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{"id": qa["id"], "question": qa["question"].lstrip(), "context": paragraph["context"],
             "answers": qa["answers"]}
            for article in document["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def trainer_child(args: dict) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    from finetune_kit.metrics import squad_metrics

    set_seed(args["seed"])
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForQuestionAnswering.from_pretrained(args["model"])

    def windows(rows: list[dict]):
        return tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                         max_length=args["max_length"], stride=args["doc_stride"], return_overflowing_tokens=True,
                         return_offsets_mapping=True)

    def train_features(rows: list[dict]) -> Dataset:
        encoded = windows(rows)
        starts, ends = [], []
        for f, k in enumerate(encoded["overflow_to_sample_mapping"]):
            answer = rows[k]["answers"][0]
            first_char, last_char = answer["answer_start"], answer["answer_start"] + len(answer["text"])
            sequence = encoded.sequence_ids(f)
            offsets = encoded["offset_mapping"][f]
            context = [i for i, s in enumerate(sequence) if s == 1]
            if offsets[context[0]][0] > first_char or offsets[context[-1]][1] < last_char:
                starts.append(0)
                ends.append(0)
                continue
            starts.append(next(i for i in context if offsets[i][1] > first_char))
            ends.append(next(i for i in reversed(context) if offsets[i][0] < last_char))
        keep = {k: v for k, v in encoded.items() if k in ("input_ids", "token_type_ids", "attention_mask")}
        return Dataset.from_dict({**keep, "start_positions": starts, "end_positions": ends})

    flop_inputs = model_flop_inputs(model, model.config)
    counter = TokenCounter(DataCollatorWithPadding(tokenizer))
    trainer = Trainer(model=model, args=reference_training_arguments(args),
                      train_dataset=train_features(squad_rows(args["train"])), data_collator=counter)
    train_metrics = trainer.train().metrics
    counter.counting = False

    rows = squad_rows(args["validation"])
    encoded = windows(rows)
    features = Dataset.from_dict({k: v for k, v in encoded.items()
                                  if k in ("input_ids", "token_type_ids", "attention_mask")})
    output = trainer.predict(features)
    start_logits, end_logits = output.predictions
    best: dict[int, tuple[float, str]] = {}
    for f, k in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence, offsets = encoded.sequence_ids(f), encoded["offset_mapping"][f]
        n = len(sequence)
        starts = np.argsort(-start_logits[f][:n])[:20]
        ends = np.argsort(-end_logits[f][:n])[:20]
        for i in starts:
            for j in ends:
                if sequence[i] != 1 or sequence[j] != 1 or j < i or j - i + 1 > 30:
                    continue
                score = float(start_logits[f][i] + end_logits[f][j])
                if k not in best or score > best[k][0]:
                    best[k] = (score, rows[k]["context"][offsets[i][0]: offsets[j][1]])
    predictions = [best.get(k, (0.0, ""))[1] for k in range(len(rows))]
    metrics = squad_metrics(predictions, [[a["text"] for a in r["answers"]] for r in rows], rules="v1.1")
    return {"train_s": train_metrics["train_runtime"], "nonpad_tokens": counter.nonpad, "padded_tokens": counter.padded,
            "sum_sq_lengths": counter.squares, **flop_inputs,
            "precision": precision_label(trainer.accelerator.mixed_precision), "exact_match": metrics["exact_match"],
            "f1": metrics["f1"], "torch_threads": torch.get_num_threads()}


# -- the finetune-kit side: its CLI, in a child process ---------------------------------------

def finetune_kit_command(args: dict, out: Path) -> list[str]:
    return [sys.executable, "-m", "finetune_kit.cli", "train", "--task", "question-answering",
            "--model", args["model"], "--train", args["train"], "--validation", args["validation"],
            "--output", str(out), "--epochs", str(args["epochs"]), "--batch-size", str(args["batch_size"]),
            "--learning-rate", str(args["learning_rate"]), "--max-length", str(args["max_length"]),
            "--seed", str(args["seed"]), "--warmup-ratio", "0", "--weight-decay", "0", "--overwrite",
            "-o", f"doc_stride={args['doc_stride']}", "-o", "max_query_length=64",
            *step_arguments(args)]


def measure(name: str, args: dict, work: Path) -> dict:
    if name == "trainer":
        result_file = work / "trainer.json"
        child_args = {**args, "work_dir": str(work / "trainer"), "result_file": str(result_file)}
        wall, rss = run_measured("HF Trainer recipe", [sys.executable, __file__, "--trainer-child",
                                                       json.dumps(child_args)])
        result = json.loads(result_file.read_text())
    else:
        out = work / "finetune-kit"
        wall, rss = run_measured(name, finetune_kit_command(args, out))
        validation = json.loads((out / "metrics.json").read_text())["validation"]
        result = {**finetune_kit_training(out, flops=True), "exact_match": validation["exact_match"],
                  "f1": validation["f1"]}
    return add_rates({**result, "peak_rss_mib": rss, "process_wall_s": wall})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-train-samples", type=int, help="first N training questions")
    parser.add_argument("--max-eval-samples", type=int, help="first N evaluation questions")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", choices=["finetune-kit", "trainer"])
    add_precision_argument(parser)
    add_run_arguments(parser)
    parser.add_argument("--trainer-child", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.trainer_child:
        child_args = json.loads(ns.trainer_child)
        Path(child_args["result_file"]).write_text(json.dumps(trainer_child(child_args)))
        return

    offline()
    work = work_directory(ns.work_dir, "fk-bench-qa-")
    train, validation = split_squad(work, ns.max_train_samples, ns.max_eval_samples)
    args = {k: v for k, v in vars(ns).items() if k not in ("only", "work_dir", "json_out", "trainer_child",
                                                           "max_train_samples", "max_eval_samples")}
    args.update(model=ns.model or packaged_encoder(), train=str(train), validation=str(validation))

    print(f"{machine()}; SQuAD v1.1 dev articles 1-38 -> train "
          f"(first {ns.max_train_samples or 'all'} questions), 39-48 -> eval (first {ns.max_eval_samples or 'all'}); "
          f"{args['epochs']:g} epoch(s), batch {args['batch_size']}, lr {args['learning_rate']}, "
          f"max length {args['max_length']}, doc stride {args['doc_stride']}, seed {args['seed']}, "
          f"{step_label(args)}")
    start_peaks = matmul_peaks()
    sides = {"finetune-kit": "finetune-kit", "trainer": "HF Trainer recipe"}
    results = {label: measure(name, args, work) for name, label in sides.items() if ns.only in (None, name)}
    print()
    peaks = add_mfu(results, start_peaks, args["mixed_precision"])
    print_table(results, QUALITY, reference="HF Trainer recipe")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"settings": args, "matmul_peak_gflops": peaks, "results": results},
                                                indent=2))


if __name__ == "__main__":
    main()
