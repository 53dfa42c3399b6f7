"""Domain-adaptive pretraining on GENIA: does continued masked-LM training on the domain's text
help the task?

1. ``masked-lm`` on the GENIA sentences of dev.json (text only; its last 10% held out, the same
   sentences span NER holds out), span masking with the span boundary objective; masked-token
   accuracy and perplexity on the GENIA test sentences, before and after (the same masks).
   The packaged encoder has no MLM head, so "before" is scored with a new head; a second run
   with the encoder frozen (``--train-top-layers 0``: only the head trains, same settings) says
   what the original encoder's vectors give once a head is fitted to them.
2. ``span-ner`` on GENIA (train dev.json, last 10% held out, test test.json) from the adapted
   encoder and from the original one, with the same settings.

    python benchmarks/domain_adaptation.py [--mlm-epochs 10] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHARED,
    add_rates,
    add_run_arguments,
    finetune_kit_training,
    machine,
    offline,
    packaged_encoder,
    run_measured,
    work_directory,
)

GENIA = SHARED / "genia_nested"


def train(task: str, model: str, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "finetune_kit.cli", "train", "--task", task, "--model", model,
               "--train", str(GENIA / "dev.json"), "--validation-fraction", "0.1", "--test", str(GENIA / "test.json"),
               "--output", str(out), "--max-length", "128", "--overwrite", *extra]
    wall, _ = run_measured(f"{task} from {Path(model).name}", command)
    metrics = json.loads((out / "metrics.json").read_text())
    return {**add_rates(finetune_kit_training(out)), "process_wall_s": wall, **metrics}


def sentence_counts(model_dir: Path, gold: list[set]) -> np.ndarray:
    """Per test sentence: exact matches, predicted and gold entities of a span-ner model."""
    import finetune_kit as fk

    predictions = fk.load(model_dir).predict_file(GENIA / "test.json")
    predicted = [{(e["start"], e["end"], e["label"]) for e in p["spans"]} for p in predictions]
    return np.array([[len(g & p), len(p), len(g)] for g, p in zip(gold, predicted)], dtype=np.float64)


def paired_f1_difference(original: Path, adapted: Path, resamples: int, seed: int) -> dict:
    """F1(adapted) - F1(original) with a paired percentile bootstrap over the test sentences:
    each resample draws the same sentences for both models."""
    from finetune_kit.data import read_file
    from finetune_kit.spans import layout_of, read_spans
    from finetune_kit.stats import Resampled, bootstrap

    raw = read_file(GENIA / "test.json")
    layout = layout_of(raw["ner"])
    gold = [set(read_spans(v, len(t), layout, "test.json")) for t, v in zip(raw["sentence"], raw["ner"])]
    columns = np.concatenate([sentence_counts(original, gold), sentence_counts(adapted, gold)], axis=1)

    def difference(sums: np.ndarray) -> np.ndarray:
        f1 = [2 * sums[..., k] / np.maximum(sums[..., k + 1] + sums[..., k + 2], 1) for k in (0, 3)]
        return f1[1] - f1[0]

    return bootstrap([Resampled("f1_difference", columns, difference)], resamples, seed)["f1_difference"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlm-epochs", type=float, default=10.0)
    parser.add_argument("--mlm-learning-rate", type=float, default=1e-4)
    parser.add_argument("--masking", default="span", choices=["token", "whole-word", "span"])
    parser.add_argument("--no-sbo", action="store_true", help="span masking without the span boundary objective")
    parser.add_argument("--epochs", type=float, default=3.0, help="span-ner epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="span-ner learning rate")
    parser.add_argument("--seed", type=int, default=42)
    add_run_arguments(parser)
    ns = parser.parse_args()
    offline()
    model = ns.model or packaged_encoder()
    work = work_directory(ns.work_dir, "fk-bench-dapt-")

    sbo = ns.masking == "span" and not ns.no_sbo
    print(f"{machine()}; "
          f"masked-lm: {ns.masking} masking{' + SBO' if sbo else ''}, {ns.mlm_epochs:g} epochs, "
          f"lr {ns.mlm_learning_rate}; span-ner: {ns.epochs:g} epochs, batch {ns.batch_size}, lr {ns.learning_rate}, "
          f"seed {ns.seed}")
    common = ["--batch-size", str(ns.batch_size), "--seed", str(ns.seed)]
    adapted = work / "genia-mlm"
    mlm_settings = [*common, "--text-column", "sentence", "--masking", ns.masking, *(["-o", "sbo=true"] if sbo else []),
                    "--epochs", str(ns.mlm_epochs), "--learning-rate", str(ns.mlm_learning_rate),
                    "--warmup-ratio", "0.06"]
    mlm = train("masked-lm", model, adapted, mlm_settings)
    head_only = train("masked-lm", model, work / "genia-mlm-head-only", [*mlm_settings, "--train-top-layers", "0"])
    ner_settings = [*common, "--epochs", str(ns.epochs), "--learning-rate", str(ns.learning_rate)]
    ner = {"original encoder": train("span-ner", model, work / "ner-original", ner_settings),
           "adapted encoder": train("span-ner", str(adapted), work / "ner-adapted", ner_settings)}

    before, frozen, after = mlm["test"]["before_training"], head_only["test"], mlm["test"]
    print(f"\nmasked-lm on {len(json.loads((GENIA / 'dev.json').read_text()))} GENIA dev sentences (90% trained): "
          f"{mlm['train_s']:.0f} s training (head only: {head_only['train_s']:.0f} s)")
    print(f"GENIA test sentences, {after['masked_tokens']} masked tokens")
    print(f"  {'':<24}{'before (new head)':>18}{'head only':>12}{'adapted':>12}")
    for key in ("accuracy", "mlm_loss", "perplexity", *(["sbo_accuracy"] if sbo else [])):
        print(f"  {key:<24}{before[key]:>18.4f}{frozen[key]:>12.4f}{after[key]:>12.4f}")
    print("\nspan-ner on GENIA test (nested gold)     precision   recall      F1   train s")
    for name, result in ner.items():
        test = result["test"]
        print(f"  {name:<38}{test['precision']:>10.4f}{test['recall']:>9.4f}{test['f1']:>8.4f}{result['train_s']:>10.0f}")
    paired = paired_f1_difference(work / "ner-original", work / "ner-adapted", 1000, ns.seed)
    print(f"  adapted - original F1: {paired['estimate']:+.4f}, 95% interval [{paired['low']:+.4f}, "
          f"{paired['high']:+.4f}] (paired bootstrap over the test sentences, 1000 resamples)")
    ner["paired_f1_difference"] = paired
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"masked_lm": mlm, "masked_lm_head_only": head_only, "span_ner": ner},
                                                indent=2, default=str))


if __name__ == "__main__":
    main()
