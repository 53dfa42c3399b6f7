"""`accelerate launch` with two CPU processes: every task trains, evaluation counts every example
once (also when the last batches are uneven or there are fewer batches than processes), and only
the main process writes files and prints the report.

The task trainings (these and the other task modules' ``@two_process_run`` plans) train together in
one launch, see tests/launched.py. The runs use examples/accelerate/cpu_2proc.yaml, so that config
is exercised too; with
--num_machines 2 and a machine rank on the command line it also starts two "machines" on
localhost, whose run must end with the weights and metrics of one process with their global batch.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune_kit as fk
from finetune_kit.inference import first_sightings
from finetune_kit.trainer import give_deepspeed_the_batch_size
from tests.conftest import NEGATIVE, POSITIVE, build_tiny_encoder, write_csv, write_jsonl
from tests.launched import CPU_CONFIG, LaunchedRun, launch, two_process_run


def validation_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["validation"]


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def assert_one_writer(run: LaunchedRun, steps: int) -> None:
    """One process wrote the log and printed the report, and the steps are those of 2 processes."""
    assert run.printed.count("## validation") == 1, run.printed[-3000:]
    words = " ".join(run.printed.split())  # the count holds however a long message might be broken into lines
    assert words.count("trainable of") == 1, run.printed[-3000:]
    [end] = [record for record in log_records(run.out) if record["event"] == "train_end"]
    assert end["step"] == steps


def rounded(value, places=5):
    """Nested metrics with floats rounded: batches of other sizes change the last digits."""
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, places) for v in value]
    return round(value, places) if isinstance(value, float) else value


def assert_same_metrics(single: dict, validation: dict) -> None:
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert rounded(single) == rounded(validation)


@two_process_run("text-classification")
def plan_classification(directory: Path, encoder: str) -> list[str]:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_csv(directory / "train.csv", rows * 2)
    dev = write_csv(directory / "dev.csv", rows[:-3])  # 13 rows: uneven across 2 processes and batches of 4
    return ["--task", "text-classification", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "4",
            "--learning-rate", "1e-3"]


def test_two_processes_train_and_evaluate_like_one(two_process_runs, tmp_path):
    run = two_process_runs["text-classification"].check()
    validation = validation_metrics(run.out)
    assert validation["num_examples"] == 13
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 13
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=4)
    assert single["accuracy"] == validation["accuracy"]
    assert single["confusion_matrix"] == validation["confusion_matrix"]
    assert single["loss"] == pytest.approx(validation["loss"], abs=1e-6)
    assert_one_writer(run, steps=8)  # 32 rows / (2 processes x 4) x 2 epochs


@two_process_run("token-classification")
def plan_tagging(directory: Path, encoder: str) -> list[str]:
    from tests.test_token_classification import SENTENCES, conll_text

    train = directory / "train.conll"
    train.write_text(conll_text(SENTENCES * 2), encoding="utf-8")
    dev = directory / "dev.conll"
    dev.write_text(conll_text(SENTENCES[:7]), encoding="utf-8")  # 7 sentences: uneven over 2 x batch 2
    return ["--task", "token-classification", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "2",
            "--learning-rate", "1e-3", "--max-length", "8", "--crf"]


def test_two_processes_evaluate_tagging_like_one(two_process_runs, tmp_path):
    """Token-level outputs of different lengths, gathered across processes: every sentence once."""
    run = two_process_runs["token-classification"].check()
    validation = validation_metrics(run.out)
    assert validation["num_sentences"] == 7 and validation["num_tokens"] == 41
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=2)
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert single == validation


@two_process_run("question-answering")
def plan_qa(directory: Path, encoder: str) -> list[str]:
    from tests.test_question_answering import toy_squad, write_squad

    data = write_squad(directory / "toy.json", toy_squad(unanswerable=True))
    return ["--task", "question-answering", "--model", encoder, "--train", str(data), "--validation", str(data),
            "--output", str(directory / "out"), "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "5",
            "--max-length", "16"]


def test_two_processes_evaluate_qa_like_one(two_process_runs, tmp_path):
    """Windows of one question spread over processes, and the no-answer threshold tuned on the
    gathered validation predictions: the same as one process."""
    run = two_process_runs["question-answering"].check()
    validation = validation_metrics(run.out)
    assert validation["num_questions"] == 36
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=5)
    assert_same_metrics(single, validation)


PAIRS = [("the cat sat on the mat", "the cat sat", "yes"), ("the dog ran in the park", "the cat sat", "no"),
         ("a man made a film", "a film was made", "yes"), ("she went to work", "the dog ran", "no"),
         ("the old man saw the dog", "a man saw a dog", "yes"), ("a woman and her cat", "the park", "no")]


@two_process_run("pair-classification")
def plan_pairs(directory: Path, encoder: str) -> list[str]:
    rows = [{"sentence1": a, "sentence2": b, "label": label} for a, b, label in PAIRS]
    train = write_csv(directory / "train.tsv", rows * 3, delimiter="\t")
    dev = write_csv(directory / "dev.tsv", rows[:5], delimiter="\t")
    return ["--task", "pair-classification", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--text-column", "sentence1", "--text-pair-column", "sentence2",
            "--epochs", "2", "--batch-size", "3", "--eval-batch-size", "2", "--learning-rate", "1e-3"]


def test_two_processes_evaluate_pairs_like_one(two_process_runs, tmp_path):
    """Sentence pairs; 5 validation pairs in batches of 2 make 3 batches, so the second process
    repeats a batch at the end: its duplicates must not count, in the metrics or the loss."""
    run = two_process_runs["pair-classification"].check()
    validation = validation_metrics(run.out)
    assert validation["num_examples"] == 5
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 5
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=2)
    assert_same_metrics(single, validation)
    assert_one_writer(run, steps=6)  # 18 rows / (2 processes x 3) x 2 epochs


@two_process_run("span-ner")
def plan_spans(directory: Path, encoder: str) -> list[str]:
    from tests.test_span_ner import NESTED, span_rows

    train = write_jsonl(directory / "train.jsonl", span_rows(NESTED) * 4)
    dev = write_jsonl(directory / "dev.jsonl", span_rows(NESTED)[:3])
    return ["--task", "span-ner", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "4",
            "--learning-rate", "5e-3"]


def test_two_processes_evaluate_spans_like_one(two_process_runs, tmp_path):
    """Span NER with 3 validation sentences in one batch of 4: fewer batches than processes, so
    both processes run the same batch and its second copy is dropped; the threshold tuned on the
    gathered candidates is the one a single process finds."""
    run = two_process_runs["span-ner"].check()
    validation = validation_metrics(run.out)
    assert validation["num_gold_nested"] == 2
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=4)
    assert_same_metrics(single, validation)
    assert_one_writer(run, steps=4)  # 16 sentences / (2 processes x 4) x 2 epochs


@two_process_run("masked-lm")
def plan_masked_lm(directory: Path, encoder: str) -> list[str]:
    lines = POSITIVE + NEGATIVE
    train = directory / "train.txt"
    train.write_text("\n".join(lines * 4) + "\n")
    dev = directory / "dev.txt"
    dev.write_text("\n".join(lines[:13]) + "\n")
    return ["--task", "masked-lm", "--model", encoder, "--train", str(train), "--validation", str(dev),
            "--output", str(directory / "out"), "--epochs", "2", "--batch-size", "2", "--eval-batch-size", "2",
            "--max-length", "16", "--learning-rate", "1e-3", "--masking", "span", "-o", "sbo=true",
            "-o", "packing=lines"]


def test_two_processes_evaluate_masked_lm_like_one(two_process_runs, tmp_path):
    """Masked-LM with span masking and SBO: both processes draw the same masks a single process
    draws, so the gathered validation figures are the single process's, token for token."""
    run = two_process_runs["masked-lm"].check()
    validation = validation_metrics(run.out)
    assert validation["num_texts"] == 13 and validation["before_training"]["masked_tokens"] == validation["masked_tokens"]
    validation.pop("before_training")
    single = fk.evaluate(run.out, run.validation, tmp_path / "single", batch_size=2)
    assert_same_metrics(single, validation)
    assert_one_writer(run, steps=32)  # 64 lines / (2 processes x 2) x 2 epochs


def test_first_sightings_keep_each_feature_once():
    # two processes' gathered batches [3, 1, -1] and [3, 1, 5]: the second repeats the first
    # (fewer batches than processes), -1 is padding, and feature 5 came in an earlier batch
    seen = np.zeros(6, dtype=bool)
    seen[5] = True
    keep = first_sightings(np.array([3, 1, -1, 3, 1, 5]), seen)
    assert keep.tolist() == [True, True, False, False, False, False]


def test_deepspeed_is_told_the_batch_size():
    """DeepSpeed sizes its batches from the training loader's batch_size, which a loader driven
    by a batch sampler does not have; the run's batch size is given to it instead."""
    from types import SimpleNamespace

    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(zero_stage=2)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))
    give_deepspeed_the_batch_size(accelerator, 8)
    assert plugin.get_value("train_micro_batch_size_per_gpu") == 8
    give_deepspeed_the_batch_size(accelerator, 16)  # a value already set (e.g. by a DeepSpeed file) stays
    assert plugin.get_value("train_micro_batch_size_per_gpu") == 8
    give_deepspeed_the_batch_size(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without GPUs")
def test_processes_without_gpus_are_joined_on_the_cpu(tmp_path):
    """Launched as if for GPUs on a machine that has none, and without ACCELERATE_USE_CPU, the
    processes still form one run instead of each training alone."""
    script = tmp_path / "ranks.py"
    script.write_text("import sys\n"
                      "from pathlib import Path\n"
                      "from finetune_kit.accelerator import new_accelerator\n"
                      "accelerator = new_accelerator()\n"
                      "rank, size = accelerator.process_index, accelerator.num_processes\n"
                      "Path(sys.argv[1], f'{rank}-of-{size}').touch()\n")
    launch([str(script), str(tmp_path)], env={"ACCELERATE_USE_CPU": "false"}, timeout=120)
    assert sorted(p.name for p in tmp_path.glob("*-of-*")) == ["0-of-2", "1-of-2"]


# -- two machines on localhost ------------------------------------------------------------------
#
# What makes N processes with batch B train like one process with batch N x B (read in
# finetune_kit/batching.py and trainer.py, and checked by the tests below):
# - the training batches are cut by LengthGroupedBatchSampler from one shuffled order, a function
#   of (seed, epoch) alone, and Accelerate hands process p every N-th batch from the p-th on; so
#   without length grouping the N batches of one step are, in order, the one batch of N x B;
#   with length grouping (the default) they are not: the groups of 50 batches, the sort within
#   them and the shuffle of the batches all depend on the batch size;
# - text classification's loss is the mean over the batch, and DDP averages the processes'
#   gradients, so the update is that of the mean over all N x B examples (a loss averaged over
#   tokens, as in tagging, would weight the processes' tokens differently);
# - the schedule counts whole-data steps and clipping sees the averaged gradients;
# - dropout draws its masks per process, of another shape than one process draws for N x B
#   examples: the runs compared have no dropout.


@pytest.fixture(scope="module")
def encoder_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("bert-no-dropout")
    return str(build_tiny_encoder(directory, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


@pytest.mark.parametrize("processes", [2, 4])
def test_the_batches_of_a_step_are_the_one_process_batch(processes):
    """Without length grouping, the batches of 4 that N processes take at one step (through
    Accelerate's sharding of the loader, as the trainer prepares it) are, in order, the batch of
    N x 4 one process takes, in every epoch."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    from finetune_kit.batching import LengthGroupedBatchSampler

    lengths = [3 + (7 * i) % 23 for i in range(48)]  # 48 examples: whole batches of 4 x N

    def epochs(batch_size: int, num_processes: int, process_index: int) -> list[list[list[int]]]:
        sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=3, group_by_length=False)
        loader = DataLoader(list(range(len(lengths))), batch_sampler=sampler, collate_fn=list)
        loader = prepare_data_loader(loader, torch.device("cpu"), num_processes=num_processes,
                                     process_index=process_index, put_on_device=False)
        batches = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            batches.append(list(loader))
        return batches

    one = epochs(4 * processes, 1, 0)
    shards = [epochs(4, processes, p) for p in range(processes)]
    for epoch, batches in enumerate(one):
        assert len(batches) == len(shards[0][epoch]) == 48 // (4 * processes)
        steps = [[i for shard in shards for i in shard[epoch][step]] for step in range(len(batches))]
        assert steps == batches
    assert one[0] != one[1]  # the order changes with the epoch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(name: str, command: list[str], logs: Path) -> tuple[str, subprocess.Popen, Path]:
    """Start ``command`` in its own process group; its output goes to LOGS/NAME.log (files, not
    pipes: nobody reads a pipe while the test waits on several processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = logs / f"{name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    return name, process, log


def stop(process: subprocess.Popen) -> None:
    """End a launcher and the workers it started. torchrun's agent gives each worker a session of
    its own, so killing the launcher's group would leave them: SIGTERM lets the agent stop its
    workers; whatever is left after a grace period is killed, the workers found beforehand too."""
    import psutil

    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass


def run_together(started: list[tuple[str, subprocess.Popen, Path]], timeout: float) -> dict[str, str]:
    """Wait for every process; all must succeed within ``timeout`` seconds, or all are stopped
    (a hung rendezvous fails the test instead of hanging the suite) and their output is shown.
    Returns the output of each, by name."""
    deadline = time.monotonic() + timeout
    failed = None
    for name, process, _ in started:
        try:
            code = process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            failed = f"{name} still running after {timeout:.0f} s"
            break
        if code != 0:
            failed = f"{name} exited with {code}"
            break
    if failed is not None:
        for _, process, _ in started:
            stop(process)
    output = {name: log.read_text(errors="replace") for name, _, log in started}
    assert failed is None, failed + "".join(f"\n--- {name} ---\n{text[-3000:]}" for name, text in output.items())
    return output


def largest_difference_of_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def test_two_machines_train_like_one_process_with_their_global_batch(encoder_without_dropout, tmp_path):
    """`accelerate launch` as two machines on localhost (one process each, joined over gloo by
    torchrun's static rendezvous at 127.0.0.1), batch 4 per process, against one process with
    batch 8: the same 8 optimizer steps on the same examples, so the same weights and metrics."""
    from safetensors.torch import load_file

    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", rows * 2)  # 32 rows: 4 steps of 8 per epoch, no uneven last batch
    dev = write_csv(tmp_path / "dev.csv", rows[:-3])  # 13 rows: uneven across the two machines
    common = ["--task", "text-classification", "--model", encoder_without_dropout, "--train", str(train),
              "--validation", str(dev), "--epochs", "2", "--eval-batch-size", "4", "--learning-rate", "1e-3",
              "--seed", "7", "--no-group-by-length", "--no-report-plots", "--bootstrap-resamples", "0"]
    two, one = tmp_path / "two-machines", tmp_path / "one-process"
    port = str(free_port())  # both machines must be given the same port: 0 (any) would pick one each
    machines = [
        start(f"machine-{rank}", [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
                                  "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                                  "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                                  "-m", "finetune_kit.cli", "train", *common, "--output", str(two),
                                  "--batch-size", "4"], tmp_path)
        for rank in (0, 1)
    ]
    single = start("one-process", [sys.executable, "-m", "finetune_kit.cli", "train", *common, "--output", str(one),
                                   "--batch-size", "8"], tmp_path)
    output = run_together([*machines, single], timeout=300)

    # one run of two processes: machine 0's process alone printed the report and wrote the files
    assert output["machine-0"].count("## validation") == 1, output["machine-0"][-3000:]
    assert "## validation" not in output["machine-1"], output["machine-1"][-3000:]
    [end_two] = [r for r in log_records(two) if r["event"] == "train_end"]
    [end_one] = [r for r in log_records(one) if r["event"] == "train_end"]
    assert end_two["step"] == end_one["step"] == 8  # 32 rows / (2 x 4) x 2 epochs; 32 / 8 x 2
    assert end_two["best_step"] == end_one["best_step"]

    # Not bit for bit: gloo's all-reduce adds the two processes' gradients (each summed over 4
    # examples) where one process sums the 8 examples' contributions inside its matrix products,
    # padded to another width; float addition in another order differs in the last bits, and 8
    # AdamW steps carry that along. Measured: about 5e-8 (printed with pytest -s).
    # Training did move the weights, by far more than that: AdamW's first step alone moves each
    # weight with a gradient by about the learning rate (1e-3), in the direction its batch
    # gives; other batches would give other weights at that scale.
    initial = load_file(Path(encoder_without_dropout) / "model.safetensors")
    for name in ("model.safetensors", "checkpoints/step-8/model.safetensors"):  # the best and the last weights
        weights_two, weights_one = load_file(two / name), load_file(one / name)
        difference = largest_difference_of_weights(weights_two, weights_one)
        moved = largest_difference_of_weights({k: weights_one[f"bert.{k}"] for k in initial}, initial)
        print(f"{name}: largest difference {difference:.1e}, largest change in training {moved:.1e}")
        assert difference < 1e-5, name
        assert moved > 1e-3, name
    assert_same_metrics(validation_metrics(one), validation_metrics(two))
