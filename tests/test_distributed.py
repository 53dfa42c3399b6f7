"""`accelerate launch` with two CPU processes: trains, and evaluation counts every example once."""

import json
import os
import subprocess
import sys

import pytest

import finetune_kit as fk
from tests.conftest import NEGATIVE, POSITIVE, write_csv


def test_two_processes_train_and_evaluate_like_one(tiny_encoder, tmp_path):
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", rows * 2)
    dev = write_csv(tmp_path / "dev.csv", rows[:-3])  # 13 rows: uneven across 2 processes and batches of 4
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "-m", "finetune_kit.cli", "train", "--task", "text-classification", "--model", tiny_encoder,
               "--train", str(train), "--validation", str(dev), "--output", str(out), "--epochs", "2",
               "--batch-size", "4", "--eval-batch-size", "4", "--learning-rate", "1e-3"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation["num_examples"] == 13
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 13
    single = fk.evaluate(out, dev, tmp_path / "single", batch_size=4)
    assert single["accuracy"] == validation["accuracy"]
    assert single["confusion_matrix"] == validation["confusion_matrix"]
    assert single["loss"] == pytest.approx(validation["loss"], abs=1e-6)
    # one process wrote the log: every optimizer step appears once
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log].count("train_end") == 1


def test_two_processes_evaluate_tagging_like_one(tiny_encoder, tmp_path):
    """Token-level outputs of different lengths, gathered across processes: every sentence once."""
    from tests.test_token_classification import SENTENCES, conll_text

    train = tmp_path / "train.conll"
    train.write_text(conll_text(SENTENCES * 2), encoding="utf-8")
    dev = tmp_path / "dev.conll"
    dev.write_text(conll_text(SENTENCES[:7]), encoding="utf-8")  # 7 sentences: uneven over 2 x batch 2
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "-m", "finetune_kit.cli", "train", "--task", "token-classification", "--model", tiny_encoder,
               "--train", str(train), "--validation", str(dev), "--output", str(out), "--epochs", "2",
               "--batch-size", "4", "--eval-batch-size", "2", "--learning-rate", "1e-3", "--max-length", "8",
               "--crf"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    validation = json.loads((out / "metrics.json").read_text())["validation"]
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "-m", "finetune_kit.cli", "train", "--task", "question-answering", "--model", tiny_encoder,
               "--train", str(data), "--validation", str(data), "--output", str(out), "--epochs", "1",
               "--batch-size", "4", "--eval-batch-size", "5", "--max-length", "16"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation["num_questions"] == 36
    single = fk.evaluate(out, data, tmp_path / "single", batch_size=5)
    assert single.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert rounded(single) == rounded(validation)


def rounded(value, places=5):
    """Nested metrics with floats rounded: batches of other sizes change the last digits."""
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    return round(value, places) if isinstance(value, float) else value
