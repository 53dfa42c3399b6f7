"""`accelerate launch` with two CPU processes: every task trains, evaluation counts every example
once (also when the last batches are uneven or there are fewer batches than processes), and only
the main process writes files and prints the report.

The runs use examples/accelerate/cpu_2proc.yaml, so that config is exercised too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune_kit as fk
from finetune_kit.inference import first_sightings
from finetune_kit.trainer import give_deepspeed_the_batch_size
from tests.conftest import NEGATIVE, POSITIVE, REPO, write_csv, write_jsonl

CPU_CONFIG = REPO / "examples" / "accelerate" / "cpu_2proc.yaml"


def launch(arguments: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``accelerate launch --config_file cpu_2proc.yaml ARGUMENTS`` and check that it succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **(env or {})}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def launch_training(arguments: list[str]) -> subprocess.CompletedProcess:
    return launch(["-m", "finetune_kit.cli", "train", *arguments])


def validation_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["validation"]


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def assert_one_writer(done: subprocess.CompletedProcess, out: Path, steps: int) -> None:
    """One process wrote the log and printed the report, and the steps are those of 2 processes."""
    printed = done.stdout + done.stderr
    assert printed.count("## validation") == 1, printed[-3000:]
    words = " ".join(printed.split())  # the count holds however a long message might be broken into lines
    assert words.count("trainable of") == 1, printed[-3000:]
    [end] = [record for record in log_records(out) if record["event"] == "train_end"]
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


def test_two_processes_train_and_evaluate_like_one(tiny_encoder, tmp_path):
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", rows * 2)
    dev = write_csv(tmp_path / "dev.csv", rows[:-3])  # 13 rows: uneven across 2 processes and batches of 4
    out = tmp_path / "out"
    done = launch_training(["--task", "text-classification", "--model", tiny_encoder, "--train", str(train),
                            "--validation", str(dev), "--output", str(out), "--epochs", "2", "--batch-size", "4",
                            "--eval-batch-size", "4", "--learning-rate", "1e-3"])
    validation = validation_metrics(out)
    assert validation["num_examples"] == 13
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 13
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=4)
    assert single["accuracy"] == validation["accuracy"]
    assert single["confusion_matrix"] == validation["confusion_matrix"]
    assert single["loss"] == pytest.approx(validation["loss"], abs=1e-6)
    assert_one_writer(done, out, steps=8)  # 32 rows / (2 processes x 4) x 2 epochs


def test_two_processes_evaluate_tagging_like_one(tiny_encoder, tmp_path):
    """Token-level outputs of different lengths, gathered across processes: every sentence once."""
    from tests.test_token_classification import SENTENCES, conll_text

    train = tmp_path / "train.conll"
    train.write_text(conll_text(SENTENCES * 2), encoding="utf-8")
    dev = tmp_path / "dev.conll"
    dev.write_text(conll_text(SENTENCES[:7]), encoding="utf-8")  # 7 sentences: uneven over 2 x batch 2
    out = tmp_path / "out"
    launch_training(["--task", "token-classification", "--model", tiny_encoder, "--train", str(train),
                     "--validation", str(dev), "--output", str(out), "--epochs", "2", "--batch-size", "4",
                     "--eval-batch-size", "2", "--learning-rate", "1e-3", "--max-length", "8", "--crf"])
    validation = validation_metrics(out)
    assert validation["num_sentences"] == 7 and validation["num_tokens"] == 41
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=2)
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert single == validation


def test_two_processes_evaluate_qa_like_one(tiny_encoder, tmp_path):
    """Windows of one question spread over processes, and the no-answer threshold tuned on the
    gathered validation predictions: the same as one process."""
    from tests.test_question_answering import toy_squad, write_squad

    data = write_squad(tmp_path / "toy.json", toy_squad(unanswerable=True))
    out = tmp_path / "out"
    launch_training(["--task", "question-answering", "--model", tiny_encoder, "--train", str(data),
                     "--validation", str(data), "--output", str(out), "--epochs", "1", "--batch-size", "4",
                     "--eval-batch-size", "5", "--max-length", "16"])
    validation = validation_metrics(out)
    assert validation["num_questions"] == 36
    single = fk.evaluate(out, data, tmp_path / "single", batch_size=5)
    assert_same_metrics(single, validation)


PAIRS = [("the cat sat on the mat", "the cat sat", "yes"), ("the dog ran in the park", "the cat sat", "no"),
         ("a man made a film", "a film was made", "yes"), ("she went to work", "the dog ran", "no"),
         ("the old man saw the dog", "a man saw a dog", "yes"), ("a woman and her cat", "the park", "no")]


def test_two_processes_evaluate_pairs_like_one(tiny_encoder, tmp_path):
    """Sentence pairs; 5 validation pairs in batches of 2 make 3 batches, so the second process
    repeats a batch at the end: its duplicates must not count, in the metrics or the loss."""
    rows = [{"sentence1": a, "sentence2": b, "label": label} for a, b, label in PAIRS]
    train = write_csv(tmp_path / "train.tsv", rows * 3, delimiter="\t")
    dev = write_csv(tmp_path / "dev.tsv", rows[:5], delimiter="\t")
    out = tmp_path / "out"
    done = launch_training(["--task", "pair-classification", "--model", tiny_encoder, "--train", str(train),
                            "--validation", str(dev), "--output", str(out), "--text-column", "sentence1",
                            "--text-pair-column", "sentence2", "--epochs", "2", "--batch-size", "3",
                            "--eval-batch-size", "2", "--learning-rate", "1e-3"])
    validation = validation_metrics(out)
    assert validation["num_examples"] == 5
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 5
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=2)
    assert_same_metrics(single, validation)
    assert_one_writer(done, out, steps=6)  # 18 rows / (2 processes x 3) x 2 epochs


def test_two_processes_evaluate_spans_like_one(tiny_encoder, tmp_path):
    """Span NER with 3 validation sentences in one batch of 4: fewer batches than processes, so
    both processes run the same batch and its second copy is dropped; the threshold tuned on the
    gathered candidates is the one a single process finds."""
    from tests.test_span_ner import NESTED, span_rows

    train = write_jsonl(tmp_path / "train.jsonl", span_rows(NESTED) * 4)
    dev = write_jsonl(tmp_path / "dev.jsonl", span_rows(NESTED)[:3])
    out = tmp_path / "out"
    done = launch_training(["--task", "span-ner", "--model", tiny_encoder, "--train", str(train),
                            "--validation", str(dev), "--output", str(out), "--epochs", "2", "--batch-size", "4",
                            "--eval-batch-size", "4", "--learning-rate", "5e-3"])
    validation = validation_metrics(out)
    assert validation["num_gold_nested"] == 2
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=4)
    assert_same_metrics(single, validation)
    assert_one_writer(done, out, steps=4)  # 16 sentences / (2 processes x 4) x 2 epochs


def test_two_processes_evaluate_masked_lm_like_one(tiny_encoder, tmp_path):
    """Masked-LM with span masking and SBO: both processes draw the same masks a single process
    draws, so the gathered validation figures are the single process's, token for token."""
    lines = POSITIVE + NEGATIVE
    train = tmp_path / "train.txt"
    train.write_text("\n".join(lines * 4) + "\n")
    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join(lines[:13]) + "\n")
    out = tmp_path / "out"
    done = launch_training(["--task", "masked-lm", "--model", tiny_encoder, "--train", str(train),
                            "--validation", str(dev), "--output", str(out), "--epochs", "2", "--batch-size", "2",
                            "--eval-batch-size", "2", "--max-length", "16", "--learning-rate", "1e-3",
                            "--masking", "span", "-o", "sbo=true", "-o", "packing=lines"])
    validation = validation_metrics(out)
    assert validation["num_texts"] == 13 and validation["before_training"]["masked_tokens"] == validation["masked_tokens"]
    validation.pop("before_training")
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=2)
    assert_same_metrics(single, validation)
    assert_one_writer(done, out, steps=32)  # 64 lines / (2 processes x 2) x 2 epochs


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
