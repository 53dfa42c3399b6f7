"""How long one ``fk.load(DIR).predict([input])`` call takes, as an application that predicts
per request calls it, and whether memory grows from call to call.

Three models on the packaged encoder, each trained for one step on a few rows in a temporary
directory (latency does not depend on what the model learned): text classification (a short
text), token classification (a tagging sentence) and question answering (a question and a
paragraph). For each: p50 and p99 latency of single-input calls after a warm-up, and the growth of
the resident memory per call.

    python benchmarks/single_call_latency.py                 # 1,000 calls per model
    python benchmarks/single_call_latency.py --calls 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, offline, packaged_encoder  # noqa: E402

TEXT = "a gripping, beautifully acted film"
SENTENCE = ["I", "saw", "Taylor", "Swift", "in", "New", "York", "yesterday"]
CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to "
           "Normandy, a region in France.")
QUESTION = {"question": "In what country is Normandy located?", "context": CONTEXT}


def resident_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def train_models(work: Path, model: str) -> dict[str, tuple[Path, object]]:
    import finetune_kit as fk

    rows = [{"text": TEXT, "label": "pos"}, {"text": "a dull, lifeless film", "label": "neg"}] * 4
    (work / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tags = ["O", "O", "B-person", "I-person", "O", "B-location", "I-location", "O"]
    (work / "tags.jsonl").write_text(json.dumps({"tokens": SENTENCE, "tags": tags}) + "\n", encoding="utf-8")
    answer = {"text": ["France"], "answer_start": [CONTEXT.index("France")]}
    (work / "qa.jsonl").write_text(json.dumps({"id": "1", **QUESTION, "answers": answer}) + "\n", encoding="utf-8")
    settings = dict(model=model, max_steps=1, report_plots=False, bootstrap_resamples=0)
    runs = {"short text (text-classification)": ("text-classification", "text.jsonl", [TEXT]),
            "tagging sentence (token-classification)": ("token-classification", "tags.jsonl", [SENTENCE]),
            "QA pair (question-answering)": ("question-answering", "qa.jsonl", [QUESTION])}
    models = {}
    for name, (task, data, inputs) in runs.items():
        out = work / task
        fk.train(task=task, train_file=str(work / data), output_dir=str(out), **settings)
        models[name] = (out, inputs)
    return models


def measure(model_dir: Path, inputs: list, calls: int, warmup: int = 50) -> dict[str, float]:
    import finetune_kit as fk

    predictor = fk.load(model_dir)
    for _ in range(warmup):
        predictor.predict(inputs)
    before = resident_kib()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        predictor.predict(inputs)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
            "rss_growth_kib_per_call": (resident_kib() - before) / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--model", help="encoder directory [default: the packaged all-MiniLM-L6-v2]")
    ns = parser.parse_args()
    offline()
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    print(f"{machine()}; {ns.calls} single-input calls per model after 50 warm-up calls")
    with tempfile.TemporaryDirectory(prefix="fk-latency-") as tmp:
        models = train_models(Path(tmp), ns.model or packaged_encoder())
        print(f"\n{'input':<42}{'p50 ms':>9}{'p99 ms':>9}{'RSS growth KiB/call':>22}")
        for name, (model_dir, inputs) in models.items():
            r = measure(model_dir, inputs, ns.calls)
            print(f"{name:<42}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['rss_growth_kib_per_call']:>22.2f}")


if __name__ == "__main__":
    main()
