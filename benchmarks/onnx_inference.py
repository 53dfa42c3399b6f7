"""A trained classifier with torch, and exported to ONNX (fp32 and int8) with onnxruntime: the
labelled file's accuracy with each, texts per second over the file (batch 64, the best of a few
passes after a warm-up, the three taking turns, one process, torch's default threads for all), the graph's size, and how
far the ONNX outputs are from torch's (largest |logit difference|, labels that differ).

    python benchmarks/onnx_inference.py MODEL_DIR DATA [--text-column sentence] [--label-column label]
    python benchmarks/onnx_inference.py /work/bench16/sst2-transformers ../shared/data/sst2/dev.tsv \\
        --text-column sentence --work-dir /tmp/onnx-check

The exports go to WORK_DIR/fp32 and WORK_DIR/int8 (kept when already there).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, offline, work_directory  # noqa: E402


def load_all(runs: dict, data: str, columns: dict, batch: int) -> tuple[dict, object]:
    import finetune_kit as fk

    predictors = {name: fk.load(d, backend=b, batch_size=batch, **columns) for name, (d, b) in runs.items()}
    raw = next(iter(predictors.values())).read_file(data, column_names=[])
    return predictors, raw


def texts_per_second(predictors: dict, texts: list, batch: int, passes: int) -> dict[str, float]:
    """The best of ``passes`` timed passes over ``texts`` per predictor, the predictors taking turns
    (so that other work on the machine slows them alike)."""
    for predictor in predictors.values():
        predictor.predict(texts[:batch])  # warm-up
    best = dict.fromkeys(predictors, float("inf"))
    for _ in range(passes):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.predict(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(texts) / seconds for name, seconds in best.items()}


def all_logits(predictor, raw, batch: int):
    import numpy as np

    from finetune_kit.inference import prepare_features, stream_outputs

    features = prepare_features(predictor.task, raw, "predict")
    logits = np.zeros((len(raw), len(predictor.labels)), dtype=np.float32)
    for indices, arrays in stream_outputs(predictor.accelerator, predictor.model, features, predictor.task, batch):
        logits[np.asarray(features["example_index"])[indices]] = arrays["logits"]
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a text-classification (or pair) model directory")
    parser.add_argument("data", help="a labelled file the model reads (CSV/TSV with a header, JSON Lines)")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the file; the best counts")
    parser.add_argument("--work-dir", help="where the exports go [default: a new temporary directory]")
    args = parser.parse_args()
    offline()
    from finetune_kit.api import export

    work = work_directory(args.work_dir, "onnx-check-")
    columns = {k: v for k, v in (("text_column", args.text_column), ("label_column", args.label_column)) if v}
    exports = {}
    for name, quantize in (("fp32", None), ("int8", "int8")):
        exports[name] = work / name
        if not (exports[name] / "model.onnx").is_file():
            start = time.perf_counter()
            export(args.model_dir, exports[name], format="onnx", quantize=quantize)
            print(f"exported {name} in {time.perf_counter() - start:.1f} s to {exports[name]}", flush=True)
    print(machine())
    runs = {"torch fp32": (args.model_dir, "torch"), "onnxruntime fp32": (exports["fp32"], "onnxruntime"),
            "onnxruntime int8": (exports["int8"], "onnxruntime")}
    predictors, raw = load_all(runs, args.data, columns, args.batch_size)
    texts = raw[next(iter(predictors.values())).task.settings.text_column]
    speed = texts_per_second(predictors, texts, args.batch_size, args.passes)
    results = {name: {"accuracy": predictor.evaluate_dataset(raw, args.data)["accuracy"], "texts_per_s": speed[name],
                      "logits": all_logits(predictor, raw, args.batch_size)}
               for name, predictor in predictors.items()}
    reference = results["torch fp32"]["logits"]
    print("| backend | accuracy | texts/s | max abs logit diff vs torch | labels differing | model file MB |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        difference = abs(result["logits"] - reference).max()
        differing = int((result["logits"].argmax(1) != reference.argmax(1)).sum())
        directory = runs[name][0]
        size = sum(p.stat().st_size for p in directory.glob("model.*")) / 1e6
        print(f"| {name} | {result['accuracy']:.4f} | {result['texts_per_s']:.0f} | {difference:.2g} | "
              f"{differing} of {len(reference)} | {size:.0f} |")


if __name__ == "__main__":
    main()
