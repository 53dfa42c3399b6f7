"""The masked-lm task: training with every masking scheme, figures before and after training on
the same masked tokens, reproducible masks (epochs, resume), the output directory as an encoder
for other tasks (LoRA included), the span boundary objective, fill-mask predictions, bad input."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_kit_tasks.masked_lm import MaskedLanguageModel, MaskedLMTask
from safetensors.torch import load_file

import finetune_kit as fk
from finetune_kit.checkpoints import read_checkpoint
from finetune_kit.masking import IGNORE_INDEX, NOT_A_WORD
from finetune_kit.modeling import load_tokenizer
from finetune_kit.saved_models import load_encoder, saved_encoder
from finetune_kit.task import DataError, TaskError, TaskSettings
from finetune_kit.inference import prepare_features
from tests.conftest import NEGATIVE, POSITIVE, write_csv, write_jsonl

TEXTS = POSITIVE + NEGATIVE


def text_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mlm_run(tiny_encoder: str, directory: Path, name: str = "out", **settings) -> tuple[Path, dict]:
    train = text_file(directory / "train.txt", TEXTS * 4)
    test = text_file(directory / "test.txt", TEXTS[::2] + ["", "  "] + TEXTS[1::2])  # blank lines are skipped
    defaults = {"task": "masked-lm", "model": tiny_encoder, "train_file": str(train), "test_file": str(test),
                "output_dir": str(directory / name), "epochs": 4, "batch_size": 4, "max_length": 24,
                "learning_rate": 2e-3, "bootstrap_resamples": 50, "report_plots": False}
    result = fk.train(**{**defaults, **settings})
    return directory / name, result.metrics


@pytest.fixture(scope="module")
def span_run(tiny_encoder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("mlm")
    return mlm_run(tiny_encoder, directory, task_options={"masking": "span", "sbo": True})


def test_training_lowers_the_masked_token_loss_on_the_same_masked_tokens(span_run):
    out, metrics = span_run
    test = metrics["test"]
    before = test["before_training"]
    assert test["num_texts"] == len(TEXTS)
    assert test["masked_tokens"] == before["masked_tokens"] > 0  # the same masks before and after
    assert test["perplexity"] == pytest.approx(math.exp(test["mlm_loss"]))
    assert test["mlm_loss"] < before["mlm_loss"] - 0.2
    assert test["sbo_loss"] < before["sbo_loss"] - 0.1
    report = (out / "report.md").read_text()
    assert "Before and after training" in report and "newly initialised head" in report
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["before_training"]["mlm_loss"] == pytest.approx(before["mlm_loss"])


def test_evaluating_the_saved_model_scores_the_same_masked_tokens(span_run, tmp_path):
    out, metrics = span_run
    again = fk.evaluate(out, out.parent / "test.txt", tmp_path / "eval", plots=False, bootstrap_resamples=0)
    for key in ("mlm_loss", "accuracy", "masked_tokens", "sbo_loss", "sbo_accuracy"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-6)


def test_the_output_directory_is_an_encoder_for_every_other_task(span_run, tmp_path):
    out, _ = span_run
    encoder = load_encoder(str(out))
    saved = load_file(out / "model.safetensors")
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, saved[f"bert.{name}"]), name  # named as in a BERT checkpoint
    text_vectors = fk.embed(str(out), ["good movie"], progress=False)
    assert np.allclose(text_vectors, fk.embed((encoder, load_tokenizer(str(out))), ["good movie"], progress=False))
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    result = fk.train(task="text-classification", model=str(out), train_file=str(write_csv(tmp_path / "t.csv", rows)),
                      output_dir=str(tmp_path / "cls"), epochs=1, batch_size=8, report_plots=False)
    assert result.global_step == 2
    classifier = load_file(tmp_path / "cls" / "model.safetensors")
    assert "classifier.weight" in classifier and not any(k.startswith("lm_head") for k in classifier)


def test_the_encoder_exports_as_a_plain_transformers_model(span_run, tmp_path):
    from transformers import AutoModel
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    out, _ = span_run
    exported = tmp_path / "encoder"
    result = CliRunner().invoke(app, ["export", str(out), "--output", str(exported), "--encoder"])
    assert result.exit_code == 0, result.output
    plain, info = AutoModel.from_pretrained(exported, output_loading_info=True)
    assert not info["unexpected_keys"] and all(k.startswith("pooler.") for k in info["missing_keys"])
    saved = load_file(out / "model.safetensors")
    for name, tensor in plain.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(tensor, saved[f"bert.{name}"]), name
    assert (exported / "tokenizer.json").exists()
    # the training output itself reads the same way: its weights are named as transformers names them
    direct, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert all(k.startswith("pooler.") for k in info["missing_keys"])
    assert all(k.startswith(("lm_head.", "span_boundary.")) for k in info["unexpected_keys"])
    assert all(torch.equal(direct.state_dict()[k], v) for k, v in plain.state_dict().items() if "pooler" not in k)
    again = CliRunner().invoke(app, ["export", str(out), "--output", str(exported), "--encoder"])
    assert again.exit_code == 2 and "is not empty" in again.output


def test_a_lora_run_gives_its_merged_encoder_to_other_tasks(tiny_encoder, tmp_path):
    out, metrics = mlm_run(tiny_encoder, tmp_path, lora=True, lora_r=4, epochs=2, learning_rate=5e-3,
                           task_options={"masking": "whole-word"})
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert metrics["test"]["mlm_loss"] < metrics["test"]["before_training"]["mlm_loss"]
    base, adapted = load_encoder(tiny_encoder).state_dict(), saved_encoder(out).state_dict()
    assert base.keys() == adapted.keys()
    changed = [k for k in base if not torch.equal(base[k], adapted[k])]
    assert changed and all(".layer." in k for k in changed)  # LoRA touched only the transformer blocks
    # the merged encoder predicts as the LoRA model does
    predictor = fk.load(out)
    batch = predictor.tokenizer(["good movie"], return_tensors="pt")
    assert type(predictor.model.get_base_model()).__name__ == "BertForMaskedLM"  # the default head
    expected = predictor.model.get_base_model().bert(**batch).last_hidden_state
    assert torch.allclose(saved_encoder(out)(**batch).last_hidden_state, expected, atol=1e-5)


def make_task(tiny_encoder: str, state: dict | None = None, **options) -> MaskedLMTask:
    task = MaskedLMTask(TaskSettings(max_length=16, options=options, seed=7))
    task.load_state(state or {}, load_tokenizer(tiny_encoder))
    return task


def test_training_masks_change_with_the_epoch_and_repeat_exactly(tiny_encoder):
    from datasets import Dataset

    task = make_task(tiny_encoder)
    raw = Dataset.from_list([{"text": t} for t in TEXTS * 3])
    features = [dict(f) for f in prepare_features(task, raw, "train")]

    def labels(epoch: int, order: list[int]) -> list[list[int]]:
        task.set_epoch(epoch)
        batch = task.collate([features[i] for i in order])
        by_feature = dict(zip(order, batch["labels"].tolist()))
        return [by_feature[i] for i in range(len(features))]

    forward = list(range(len(features)))
    first = labels(0, forward)
    assert labels(0, forward[::-1]) == first  # whatever the batch holds or its order
    assert labels(1, forward) != first
    scoring = [dict(f) for f in prepare_features(task, raw, "test")]
    task.set_epoch(0)
    fixed = task.collate(scoring)["labels"]
    task.set_epoch(3)
    assert torch.equal(task.collate(scoring)["labels"], fixed)  # evaluation masks ignore the epoch


def test_resuming_mid_epoch_trains_on_the_same_masks(tiny_encoder, tmp_path, single_torch_thread):
    reference, _ = mlm_run(tiny_encoder, tmp_path, "reference", epochs=2, save_steps=3, save_total_limit=20,
                           test_file=None)
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for item in ("model.safetensors", "metrics.json"):
        (resumed / item).unlink()
    checkpoint = resumed / "checkpoints" / "step-3"
    assert read_checkpoint(checkpoint)["batches_done"] == 3  # in the middle of the first epoch
    mlm_run(tiny_encoder, tmp_path, "resumed", epochs=2, save_steps=3, save_total_limit=20, test_file=None,
            resume_from=str(checkpoint))
    first, second = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_words_given_as_lists_are_masked_whole(tiny_encoder):
    from datasets import Dataset

    task = make_task(tiny_encoder, masking="whole-word")
    words = ["films", "good", "moviegoer", "acting", "goodness"]  # 2, 1, 4, 1 and 2 subwords
    [feature] = prepare_features(task, Dataset.from_list([{"text": words}]), "train")
    tokenizer = task.tokenizer
    pieces = [tokenizer.tokenize(w) for w in words]
    assert feature["word_ids"] == [NOT_A_WORD] + [k for k, p in enumerate(pieces) for _ in p] + [NOT_A_WORD]
    for epoch in range(20):
        task.set_epoch(epoch)
        labels = task.collate([dict(feature)])["labels"][0].tolist()
        chosen = {feature["word_ids"][i] for i, label in enumerate(labels) if label != IGNORE_INDEX}
        for i, word in enumerate(feature["word_ids"]):
            assert (labels[i] != IGNORE_INDEX) == (word in chosen)


def test_span_boundary_objective_reads_the_tokens_around_the_span(tiny_encoder):
    encoder = load_encoder(tiny_encoder)
    model = MaskedLanguageModel(encoder, sbo=True).eval()
    input_ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 2:5] = input_ids[0, 2:5]  # one span: positions 2..4, boundaries 1 and 5
    left = torch.tensor([[0, 0, 1, 1, 1, 0, 0]])
    right = torch.tensor([[0, 0, 5, 5, 5, 0, 0]])
    inside = torch.tensor([[0, 0, 0, 1, 2, 0, 0]])
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                sbo_left=left, sbo_right=right, sbo_inside=inside)
    assert out.sbo_loss.shape == input_ids.shape and out.token_loss.shape == input_ids.shape
    hidden = encoder(input_ids=input_ids).last_hidden_state[0]
    head = model.span_boundary
    vectors = head.vectors(hidden[[1, 1, 1]], hidden[[5, 5, 5]], torch.tensor([0, 1, 2]))
    assert vectors.shape == (3, encoder.config.hidden_size)
    logits = vectors @ encoder.get_input_embeddings().weight.T + head.bias
    expected = torch.nn.functional.cross_entropy(logits, input_ids[0, 2:5], reduction="none")
    assert torch.allclose(out.sbo_loss[0, 2:5], expected, atol=1e-5)
    assert out.sbo_loss[0, [0, 1, 5, 6]].abs().sum() == 0
    mlm_only = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    assert torch.allclose(out.loss, mlm_only.loss + expected.mean(), atol=1e-5)


def test_predict_fills_in_each_mask_in_order(span_run):
    out, _ = span_run
    predictor = fk.load(out)
    first, second = predictor.predict(["a [MASK] movie and [MASK] acting", "no mask here"])
    assert len(first["masks"]) == 2 and second["masks"] == []
    for candidates in first["masks"]:
        scores = [c["score"] for c in candidates]
        assert len(candidates) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


def test_unigram_counts_go_with_the_model(tiny_encoder, tmp_path):
    out, _ = mlm_run(tiny_encoder, tmp_path, epochs=1, task_options={"random_tokens": "unigram"})
    state = json.loads((out / "finetune_kit.json").read_text())["task_state"]
    tokenizer = load_tokenizer(tiny_encoder)
    good = tokenizer.convert_tokens_to_ids("good")
    assert state["unigram_counts"][str(good)] == sum(t.split().count("good") for t in TEXTS) * 4
    task = make_task(tiny_encoder, state, random_tokens="unigram")
    drawn = task.random_tokens.draw(np.random.default_rng(0), 5000)
    assert set(drawn) <= {int(k) for k in state["unigram_counts"]}


@pytest.mark.parametrize("options, message", [
    ({"masking": "words"}, "task_options.masking"),
    ({"sbo": True}, "needs span masking"),
    ({"mask_rate": 1.5}, "mask_rate"),
    ({"colour": 1}, "not known to masked-lm"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(TaskError, match=message):
        MaskedLMTask(TaskSettings(options=options))


def test_a_non_text_value_names_the_file_and_line(tiny_encoder, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": 5}, {"text": 3}])
    with pytest.raises(DataError, match=r"train.jsonl line 1: column 'text' is not text \(int\)"):
        fk.train(task="masked-lm", model=tiny_encoder, train_file=str(train), output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_split_of_empty_texts_is_a_one_line_error(tiny_encoder, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": ""}, {"text": "   "}])
    with pytest.raises(DataError, match=r"train.jsonl: every text in column 'text' is empty"):
        fk.train(task="masked-lm", model=tiny_encoder, train_file=str(train), output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    task = MaskedLMTask(TaskSettings(text_column="sentence"))
    from datasets import Dataset

    with pytest.raises(DataError, match=r"dev.json: every text in column 'sentence' is empty"):
        task.validate(Dataset.from_list([{"sentence": []}, {"sentence": [" "]}]), "validation", "dev.json")
    task.validate(Dataset.from_list([{"sentence": []}, {"sentence": ["IL-2"]}]), "validation", "dev.json")


def test_split_metrics_are_the_mean_over_every_masked_token(span_run):
    """masked_tokens, mlm_loss and accuracy recomputed by hand from one forward pass over all
    test sequences with their scoring masks."""
    out, metrics = span_run
    predictor = fk.load(out)
    raw = predictor.read_file(out.parent / "test.txt")
    batch = predictor.task.collate([dict(f) for f in prepare_features(predictor.task, raw, "test")])
    model = predictor.accelerator.unwrap_model(predictor.model)
    with torch.no_grad():
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        chosen = batch["labels"] != IGNORE_INDEX
        logits = model.lm_head(hidden[chosen], model.encoder.get_input_embeddings().weight)
    targets = batch["labels"][chosen]
    assert metrics["test"]["masked_tokens"] == int(chosen.sum())
    loss = torch.nn.functional.cross_entropy(logits, targets).item()
    assert metrics["test"]["mlm_loss"] == pytest.approx(loss, abs=1e-5)
    assert metrics["test"]["accuracy"] == pytest.approx((logits.argmax(-1) == targets).float().mean().item())


def test_texts_the_tokenizer_empties_are_left_out_and_counted(tiny_encoder, tmp_path):
    """Lines of only zero-width or control characters tokenize to nothing: they are left out
    with a warning naming how many and the first; a split of nothing else is a one-line error."""
    lines = TEXTS[:4] + ["\u200b\u200b"] + TEXTS[4:] + ["\x01\x02", "\u00ad"]  # lines 5, 18 and 19
    train = text_file(tmp_path / "train.txt", lines)
    with pytest.warns(UserWarning, match=r"train.txt: 3 text\(s\) in column 'text' are empty to the tokenizer "
                                         r"\(only control, zero-width or other characters it drops\) and are left "
                                         r"out \(the first on line 5\)"):
        fk.train(task="masked-lm", model=tiny_encoder, train_file=str(train), output_dir=str(tmp_path / "out"),
                 max_steps=1, report_plots=False, bootstrap_resamples=0)
    state = json.loads((tmp_path / "out" / "finetune_kit.json").read_text())["task_state"]
    assert state["texts_without_tokens"] == {str(train): 3}

    empty = text_file(tmp_path / "empty.txt", ["\u200b\u200b", "\x01\x02", "\u200b \x7f"])
    clean = text_file(tmp_path / "clean.txt", TEXTS)
    for settings in ({"train_file": str(empty)}, {"train_file": str(clean), "validation_file": str(empty)}):
        with pytest.raises(DataError, match=r"^\S*empty.txt: every text in column 'text' is empty to the tokenizer, "
                                            r"which drops their characters \(control or zero-width ones\); there is "
                                            r"nothing to mask$"):
            fk.train(task="masked-lm", model=tiny_encoder, output_dir=str(tmp_path / "bad"), **settings)
        assert not (tmp_path / "bad").exists()

    task = MaskedLMTask(TaskSettings())
    task.load_state({}, load_tokenizer(tiny_encoder))
    from datasets import Dataset

    with pytest.raises(DataError, match=r"input: every text in column 'text' is empty to the tokenizer"):
        task.validate(Dataset.from_list([{"text": "\u200b"}, {"text": "\x01"}]), "predict", "input")
    task.validate(Dataset.from_list([{"text": "\u200b"}, {"text": "a [MASK]"}]), "predict", "input")
