"""Span NER against BIO tagging on the same data, and span NER's cost as candidate spans grow.

``--part quality`` (default): GENIA nested NER, trained on dev.json (its last 10% held out for
the best checkpoint and the threshold) and scored on test.json's full nested gold, with
``span-ner`` (nested decoding) and with ``token-classification`` trained on the same sentences
flattened to their outermost entities (``examples/spans_to_conll.py``), whose predicted
entities are scored against the same nested gold; then WNUT-17 (flat) with both tasks.

``--part precision``: span-ner on GENIA (as in ``--part quality``) in fp32 and in bf16 mixed
precision, for each of ``--seeds``: test P/R/F1 and training speed side by side.

``--part width``: span-ner on GENIA for a fixed number of steps at several ``max_span_width``
values, with token-classification as the reference row: training throughput, candidate spans
per sentence and peak memory. Each run is a child process (peak RSS by ``wait4``).

    python benchmarks/span_ner_benchmark.py                 # quality, GENIA and WNUT-17
    python benchmarks/span_ner_benchmark.py --part width    # widths 4, 8, 12, 16
    python benchmarks/span_ner_benchmark.py --part precision --seeds 42 1 2
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

GENIA = SHARED / "genia_nested"
WNUT = SHARED / "wnut17"


def train_command(task: str, out: Path, args: dict, train: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "finetune_kit.cli", "train", "--task", task, "--model", args["model"],
            "--train", str(train), "--output", str(out), "--epochs", str(args["epochs"]),
            "--batch-size", str(args["batch_size"]), "--learning-rate", str(args["learning_rate"]),
            "--max-length", "128", "--seed", str(args["seed"]), "--overwrite", *extra]


def nested_score(model_dir: Path, test: Path, gold_file: Path) -> dict:
    """A tagger's predicted entities on ``test`` (flattened) scored against ``gold_file``'s spans."""
    import finetune_kit as fk
    from finetune_kit.data import read_file
    from finetune_kit.metrics import span_metrics
    from finetune_kit.spans import layout_of, read_spans

    predictions = fk.load(model_dir).predict_file(test)
    raw = read_file(gold_file)
    tokens_col = "sentence" if "sentence" in raw.column_names else "tokens"
    spans_col = next(c for c in ("ner", "spans", "tags") if c in raw.column_names)
    layout = layout_of(raw[spans_col])
    gold = [read_spans(v, len(t), layout, str(gold_file), "IOB2") for t, v in zip(raw[tokens_col], raw[spans_col])]
    predicted = [[(e["start"], e["end"], e["type"]) for e in p["entities"]] for p in predictions]
    return span_metrics(gold, predicted)


QUALITY = [("test P", "test_precision", ".4f"), ("test R", "test_recall", ".4f"), ("test F1", "test_f1", ".4f")]


def scored(scores: dict) -> dict:
    """Test P/R/F1 under their own keys (a result's ``precision`` is the dtype it trained in)."""
    return {f"test_{key}": scores[key] for key in ("precision", "recall", "f1")}


def run(name: str, command: list[str], out: Path) -> dict:
    wall, rss = run_measured(name, command)
    return add_rates({**finetune_kit_training(out), "peak_rss_mib": rss, "process_wall_s": wall})


def quality(args: dict, work: Path) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    from spans_to_conll import convert

    flat_train, flat_test = work / "genia-dev.conll", work / "genia-test.conll"
    convert(GENIA / "dev.json", flat_train)
    convert(GENIA / "test.json", flat_test)
    held_out = ["--validation-fraction", "0.1"]
    same_head_lr = ["--head-learning-rate", str(args["span_head_lr"])]
    genia: dict[str, dict] = {}
    out = work / "genia-span"
    genia["span-ner (nested)"] = run("GENIA span-ner", train_command(
        "span-ner", out, args, GENIA / "dev.json", [*held_out, "--test", str(GENIA / "test.json")]), out)
    genia["span-ner (nested)"].update(scored(json.loads((out / "metrics.json").read_text())["test"]))
    for label, extra in (("token-classification", []), ("token-classification, head lr as span-ner", same_head_lr)):
        out = work / f"genia-bio{len(extra)}"
        genia[label] = run(f"GENIA {label}", train_command("token-classification", out, args, flat_train,
                                                          [*held_out, *extra]), out)
        genia[label].update(scored(nested_score(out, flat_test, GENIA / "test.json")))
    wnut: dict[str, dict] = {}
    files = ["--validation", str(WNUT / "emerging.dev.conll"), "--test", str(WNUT / "emerging.test.annotated")]
    for task, label, extra in (("span-ner", "span-ner", []), ("token-classification", "token-classification", []),
                               ("token-classification", "token-classification, head lr as span-ner", same_head_lr)):
        out = work / f"wnut-{label.replace(' ', '-').replace(',', '')}"
        wnut[label] = run(f"WNUT-17 {label}", train_command(task, out, args, WNUT / "wnut17train.conll",
                                                             [*files, *extra]), out)
        wnut[label].update(scored(json.loads((out / "metrics.json").read_text())["test"]))
    print("\nGENIA test, scored against the full nested gold (token-classification trained on outermost entities)")
    print_table(genia, QUALITY, reference="token-classification")
    print("\nWNUT-17 test (flat; token-classification F1 in strict IOB2 mode)")
    print_table(wnut, QUALITY, reference="token-classification")
    if args["json_out"]:
        Path(args["json_out"]).write_text(json.dumps({"genia": genia, "wnut": wnut}, indent=2, default=str))


def precision(args: dict, work: Path) -> None:
    results: dict[str, dict] = {}
    for seed in args["seeds"]:
        for mixed_precision, label in (("no", "fp32"), ("bf16", "bf16")):
            out = work / f"genia-span-{label}-{seed}"
            name = f"span-ner {label}, seed {seed}"
            results[name] = run(f"GENIA {name}", train_command(
                "span-ner", out, {**args, "seed": seed}, GENIA / "dev.json",
                ["--validation-fraction", "0.1", "--test", str(GENIA / "test.json"),
                 "--mixed-precision", mixed_precision]), out)
            results[name].update(scored(json.loads((out / "metrics.json").read_text())["test"]))
    print("\nGENIA test, nested gold: span-ner in fp32 and bf16")
    print_table(results, QUALITY, reference=f"span-ner fp32, seed {args['seeds'][0]}")
    for label in ("fp32", "bf16"):
        scores = [results[f"span-ner {label}, seed {seed}"]["test_f1"] for seed in args["seeds"]]
        rates = [results[f"span-ner {label}, seed {seed}"]["nonpad_tok_s"] for seed in args["seeds"]]
        print(f"{label}: test F1 mean {sum(scores) / len(scores):.4f} (min {min(scores):.4f}, max {max(scores):.4f}); "
              f"non-pad tok/s mean {sum(rates) / len(rates):.0f}")
    if args["json_out"]:
        Path(args["json_out"]).write_text(json.dumps(results, indent=2, default=str))


def width(args: dict, work: Path) -> None:
    import datasets

    from finetune_kit.spans import candidate_spans

    sentences = datasets.Dataset.from_json(str(GENIA / "dev.json"))["sentence"]
    results: dict[str, dict] = {}
    steps = ["--max-steps", str(args["steps"]), "--epochs", "100"]
    flat_train = work / "genia-dev.conll"
    sys.path.insert(0, str(REPO / "examples"))
    from spans_to_conll import convert

    convert(GENIA / "dev.json", flat_train)
    out = work / "tagger"
    results["token-classification"] = run("token-classification", train_command(
        "token-classification", out, args, flat_train, steps), out)
    results["token-classification"]["spans_per_sentence"] = 0.0
    for max_width in args["widths"]:
        out = work / f"span-{max_width}"
        label = f"span-ner max_span_width={max_width}"
        results[label] = run(label, train_command("span-ner", out, args, GENIA / "dev.json",
                                                  [*steps, "-o", f"max_span_width={max_width}"]), out)
        results[label]["spans_per_sentence"] = sum(len(candidate_spans(len(s), max_width))
                                                   for s in sentences) / len(sentences)
    print()
    print_table(results, [("spans/sentence", "spans_per_sentence", ".0f")], reference="token-classification")
    if args["json_out"]:
        Path(args["json_out"]).write_text(json.dumps(results, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["quality", "width", "precision"], default="quality")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="the seeds of --part precision")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run of --part width")
    parser.add_argument("--span-head-lr", type=float, default=1e-3,
                        help="span-ner's default head learning rate, also given to a second tagger row")
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 12, 16])
    add_run_arguments(parser)
    ns = parser.parse_args()
    offline()
    args = {**vars(ns), "model": ns.model or packaged_encoder()}
    work = work_directory(ns.work_dir, "fk-bench-span-")

    print(f"{machine()};"
          f" {args['epochs']:g} epoch(s), batch {args['batch_size']}, lr {args['learning_rate']}, max length 128, "
          f"seed {args['seed']}")
    {"quality": quality, "width": width, "precision": precision}[ns.part](args, work)


if __name__ == "__main__":
    main()
