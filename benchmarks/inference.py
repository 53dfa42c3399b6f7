"""Inference throughput and quality side by side, on the same saved models: transformers' pipeline
(batch size 1 and 32), ``finetune-kit predict`` (fp32, and bf16 autocast), ONNX Runtime (fp32 and
int8, exported with ``finetune-kit export --format onnx``) and the HTTP server
(``finetune-kit serve``, one input per request, 1, 8 and 64 requests in flight).

Work: SST-2 dev (texts/s, accuracy), WNUT-17 test (sentences/s, strict entity F1) and the SQuAD
v1.1 split's evaluation articles 39-48 (questions/s, EM and F1). Each side's time runs from Python
inputs to finished predictions (tokenizing and postprocessing included), after a warm-up call.
"same" is the share of predictions identical to ``predict`` fp32's (the label, every word's tag,
the answer text).

The models are those of the README's recipes (``examples/sst2.yaml``, ``wnut17.yaml``,
``squad.yaml``); one not given is trained first (SST-2 about 4 minutes on 2 cores, WNUT-17 3,
SQuAD 16). transformers 5 has no question-answering pipeline: ``--pipeline-python`` names an
interpreter with transformers 4.x and torch, which runs that side in a child process.

    python benchmarks/inference.py --sst2-model runs/sst2 --wnut-model runs/wnut17 \\
        --squad-model runs/squad/model --pipeline-python /path/to/transformers4/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, machine, offline, work_directory  # noqa: E402

PIPELINE_BATCHES = (1, 32)
CONCURRENCY = (1, 8, 64)


# -- the pipeline side (in this process, or in a child with another transformers) ----------------
def pipeline_outputs(kind: str, model_dir: str, inputs: list, batch_size: int, settings: dict) -> tuple[list, float]:
    """The pipeline's outputs for all inputs, and the seconds they took after a warm-up call."""
    from transformers import pipeline

    pipe = pipeline(kind, model=model_dir, device="cpu")

    def run(items: list) -> list:
        if kind == "question-answering":
            out = pipe(question=[q["question"] for q in items], context=[q["context"] for q in items],
                       batch_size=batch_size, **settings)
            return out if isinstance(out, list) else [out]
        return list(pipe(items, batch_size=batch_size, **settings))

    run(inputs[:batch_size])
    start = time.perf_counter()
    outputs = run(inputs)
    return outputs, time.perf_counter() - start


def child(request_path: str, answer_path: str) -> None:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    outputs, seconds = pipeline_outputs(request["kind"], request["model_dir"], request["inputs"],
                                        request["batch_size"], request["settings"])
    Path(answer_path).write_text(json.dumps({"outputs": outputs, "seconds": seconds}, default=float), encoding="utf-8")


def run_pipeline(kind: str, model_dir: Path, inputs: list, batch_size: int, settings: dict,
                 python: str | None, work: Path) -> tuple[list, float] | None:
    """In this process where transformers has the pipeline, else in ``python``; None without either."""
    from transformers.pipelines import SUPPORTED_TASKS

    if kind in SUPPORTED_TASKS:
        return pipeline_outputs(kind, str(model_dir), inputs, batch_size, settings)
    if not python:
        return None
    request, answer = work / "pipeline_request.json", work / "pipeline_answer.json"
    request.write_text(json.dumps({"kind": kind, "model_dir": str(model_dir), "inputs": inputs,
                                   "batch_size": batch_size, "settings": settings}), encoding="utf-8")
    subprocess.run([python, __file__, "--child", str(request), str(answer)], check=True,
                   env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    result = json.loads(answer.read_text(encoding="utf-8"))
    return result["outputs"], result["seconds"]


# -- the three kinds of work --------------------------------------------------------------------
@dataclass
class Work:
    """One model's benchmark: its inputs as the Python API takes them, the labelled data its
    quality is computed on, and how a pipeline's outputs become finetune-kit predictions."""

    name: str
    unit: str
    model_dir: Path
    data: Path
    pipeline_kind: str
    metrics: tuple[str, ...]
    inputs: list = field(default_factory=list)
    raw: Any = None
    pipeline_settings: dict = field(default_factory=dict)

    def prepare(self, predictor: Any) -> None:
        self.raw = predictor.read_file(self.data)
        task, settings = predictor.task, predictor.task.settings
        if self.pipeline_kind == "text-classification":
            self.inputs = list(self.raw[settings.text_column])
            self.pipeline_settings = {"truncation": True, "max_length": settings.max_length}
        elif self.pipeline_kind == "token-classification":
            self.inputs = [list(words) for words in self.raw[settings.text_column]]
            self.pipeline_settings = {"aggregation_strategy": "none"}
        else:
            self.inputs = [{"question": q, "context": c} for q, c in zip(self.raw["question"], self.raw["context"])]
            self.pipeline_settings = {"max_seq_len": settings.max_length, "doc_stride": task.options["doc_stride"],
                                      "max_answer_len": task.options["max_answer_length"],
                                      "max_question_len": task.options["max_query_length"],
                                      "align_to_words": False}

    def pipeline_inputs(self) -> list:
        """Tagging: the words joined by spaces, the string a pipeline user passes."""
        if self.pipeline_kind == "token-classification":
            return [" ".join(words) for words in self.inputs]
        return self.inputs

    def from_pipeline(self, outputs: list) -> list[dict]:
        if self.pipeline_kind == "text-classification":
            return [{"label": o["label"], "score": o["score"]} for o in outputs]
        if self.pipeline_kind == "question-answering":
            return [{"answer": o["answer"], "score": o["score"]} for o in outputs]
        return [{"tags": word_tags(words, tokens)} for words, tokens in zip(self.inputs, outputs)]

    def quality(self, predictor: Any, predictions: list[dict]) -> dict[str, float]:
        raw = self.raw if len(predictions) == len(self.raw) else self.raw.select(range(len(predictions)))
        metrics = predictor.task.compute_metrics(predictions, raw)
        return {name: float(metrics[name]) for name in self.metrics}


def word_tags(words: list[str], tokens: list[dict]) -> list[str]:
    """Each word's tag from the pipeline's tokens (aggregation "none"; "O" tokens left out): the
    tag of the token that starts where the word starts, its first subword."""
    by_start = {token["start"]: token["entity"] for token in tokens}
    tags, offset = [], 0
    for word in words:
        tags.append(by_start.get(offset, "O"))
        offset += len(word) + 1
    return tags


def key(prediction: dict) -> Any:
    """What must agree for two predictions to count as the same."""
    for name in ("tags", "answer", "label"):
        if name in prediction:
            return prediction[name]
    raise KeyError(sorted(prediction))


# -- finetune-kit's sides -----------------------------------------------------------------------
def timed_predict(predictor: Any, inputs: list) -> tuple[list[dict], float]:
    predictor.predict(inputs[:64])
    start = time.perf_counter()
    predictions = predictor.predict(inputs)
    return predictions, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``finetune-kit serve`` in a child process, for the duration of a ``with``."""

    def __init__(self, model_dir: Path, max_batch_size: int = 64, max_wait_ms: float = 5) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-c", "from finetune_kit.cli import main; main()", "serve", str(model_dir),
                        "--port", str(self.port), "--max-batch-size", str(max_batch_size),
                        "--max-wait-ms", str(max_wait_ms)]

    def __enter__(self) -> "Server":
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server stopped: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not answer /health within 120 s")

    def __exit__(self, *_: Any) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def load_test(url: str, inputs: list, concurrency: int) -> tuple[list[dict], list[float], float]:
    """Send every input as its own request, ``concurrency`` in flight; the answers, each request's
    latency and the wall time."""
    import httpx

    answers: list[Any] = [None] * len(inputs)
    latencies = [0.0] * len(inputs)
    pending = iter(range(len(inputs)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            for i in pending:
                start = time.perf_counter()
                response = await client.post("/predict", json={"inputs": [inputs[i]]})
                latencies[i] = time.perf_counter() - start
                response.raise_for_status()
                answers[i] = response.json()["predictions"][0]

        await client.post("/predict", json={"inputs": inputs[:concurrency]})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return answers, latencies, wall


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def export_onnx(model_dir: Path, out: Path, quantize: str | None) -> Path:
    from finetune_kit.api import export

    if not (out / "model.onnx").exists():
        export(model_dir, out, format="onnx", quantize=quantize)
    return out


# -- one work's table -----------------------------------------------------------------------------
@dataclass
class Row:
    side: str
    per_s: float
    quality: dict[str, float]
    same: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None


def benchmark(work: Work, ns: argparse.Namespace, out: Path) -> list[Row]:
    import finetune_kit as fk

    predictor = fk.load(work.model_dir)
    work.prepare(predictor)
    inputs = work.inputs
    rows: list[Row] = []
    reference, seconds = timed_predict(predictor, inputs)
    reference_keys = [key(p) for p in reference]

    def same(predictions: list[dict]) -> float:
        return sum(key(p) == k for p, k in zip(predictions, reference_keys)) / len(predictions)

    def add(side: str, predictions: list[dict], seconds: float, **latency: float) -> None:
        rows.append(Row(side, len(predictions) / seconds, work.quality(predictor, predictions), same(predictions),
                        **latency))
        print(f"  {side}: {len(predictions) / seconds:.1f} {work.unit}/s", flush=True)

    print(f"{work.name}: {len(inputs)} {work.unit}", flush=True)
    for batch_size in PIPELINE_BATCHES:
        result = run_pipeline(work.pipeline_kind, work.model_dir, work.pipeline_inputs(), batch_size,
                              work.pipeline_settings, ns.pipeline_python, out)
        if result is None:
            print(f"  pipeline: skipped (this transformers has no {work.pipeline_kind} pipeline; "
                  "give --pipeline-python)")
            break
        outputs, pipeline_seconds = result
        add(f"pipeline, batch {batch_size}", work.from_pipeline(outputs), pipeline_seconds)
    add("predict fp32", reference, seconds)
    add("predict bf16", *timed_predict(fk.load(work.model_dir, precision="bf16"), inputs))
    for quantize in (None, "int8"):
        onnx_dir = export_onnx(work.model_dir, out / f"{work.model_dir.name}-onnx-{quantize or 'fp32'}", quantize)
        add(f"ONNX Runtime {quantize or 'fp32'}", *timed_predict(fk.load(onnx_dir), inputs))
    server_inputs = inputs[: ns.server_requests] if ns.server_requests else inputs
    with Server(work.model_dir) as server:
        for concurrency in CONCURRENCY:
            answers, latencies, wall = asyncio.run(load_test(server.url, server_inputs, concurrency))
            subset = f" (first {len(server_inputs)})" if len(server_inputs) < len(inputs) else ""
            add(f"server, {concurrency} in flight{subset}", answers, wall, p50_ms=percentile(latencies, 0.5) * 1000,
                p99_ms=percentile(latencies, 0.99) * 1000)
    return rows


def print_table(work: Work, rows: list[Row]) -> None:
    metric_names = list(work.metrics)
    print(f"\n{work.name}, {len(work.inputs)} {work.unit}")
    header = f"{'side':<28}{work.unit + '/s':>12}{'p50 ms':>9}{'p99 ms':>9}" + "".join(f"{m:>13}" for m in metric_names)
    print(header + f"{'same':>8}")
    for row in rows:
        latency = "".join(f"{v:>9.1f}" if v is not None else f"{'':>9}" for v in (row.p50_ms, row.p99_ms))
        figures = "".join(f"{row.quality[m]:>13.4f}" for m in metric_names)
        print(f"{row.side:<28}{row.per_s:>12.1f}{latency}{figures}{row.same:>8.1%}")
    pipelines = [r.per_s for r in rows if r.side.startswith("pipeline")]
    ours = next(r.per_s for r in rows if r.side == "predict fp32")
    if pipelines:
        print(f"predict fp32 / best pipeline: {ours / max(pipelines):.2f}x")


# -- models ---------------------------------------------------------------------------------------
def trained_model(given: str | None, recipe: str, work_dir: Path, overrides: list[str]) -> Path:
    """The model given, or one trained with the README's recipe into the work directory."""
    if given:
        return Path(given)
    import finetune_kit as fk

    out = work_dir / Path(recipe).stem
    if not (out / "finetune_kit.json").exists():
        print(f"training {recipe} into {out} ...", flush=True)
        fk.train(str(REPO / "examples" / recipe), [f"output_dir={out}", "report_plots=false", *overrides])
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sst2-model", help="a text-classification model trained on SST-2 [trained if not given]")
    parser.add_argument("--wnut-model", help="a token-classification model trained on WNUT-17 [trained if not given]")
    parser.add_argument("--squad-model", help="a question-answering model trained on SQuAD articles 1-38 "
                        "[trained if not given]")
    parser.add_argument("--only", default="sst2,wnut17,squad", help="which of sst2,wnut17,squad to run [all]")
    parser.add_argument("--pipeline-python", help="a Python with transformers 4.x, for the QA pipeline")
    parser.add_argument("--server-requests", type=int, default=0,
                        help="send only the first N inputs to the server (its quality: of those) [0: all]")
    parser.add_argument("--work-dir", help="where exports (and trained models) go [a new temporary directory]")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    ns = parser.parse_args()
    offline()
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    work_dir = work_directory(ns.work_dir, "fk-inference-")
    print(machine())
    chosen = set(ns.only.split(","))
    works = []
    if "sst2" in chosen:
        works.append(Work("SST-2 dev", "texts", trained_model(ns.sst2_model, "sst2.yaml", work_dir, []),
                          SHARED / "sst2" / "dev.tsv", "text-classification", ("accuracy",)))
    if "wnut17" in chosen:
        works.append(Work("WNUT-17 test", "sentences", trained_model(ns.wnut_model, "wnut17.yaml", work_dir, []),
                          SHARED / "wnut17" / "emerging.test.annotated", "token-classification", ("f1",)))
    if "squad" in chosen:
        from qa_vs_trainer import split_squad

        train_file, eval_file = split_squad(work_dir, None, None)
        model = trained_model(ns.squad_model, "squad.yaml", work_dir,
                              [f"train_file={train_file}", f"validation_file={eval_file}"])
        works.append(Work("SQuAD v1.1 articles 39-48", "questions", model, eval_file, "question-answering",
                          ("exact_match", "f1")))
    results = {}
    for work in works:
        rows = benchmark(work, ns, work_dir)
        print_table(work, rows)
        results[work.name] = [vars(r) for r in rows]
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
