"""Classifiers and taggers saved as transformers saves them: the default heads are the
architecture's own (``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``),
so transformers, its pipelines and peft load a model directory as it is, and predict what
finetune-kit predicts. finetune-kit's own heads (``pooling=cls|mean|pooler``, ``crf``) and models
saved before the head was recorded still load as the heads they were trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizerFast,
    RobertaConfig,
    RobertaModel,
    pipeline,
)

import finetune_kit as fk
from finetune_kit.heads import transformers_model
from finetune_kit.registry import get_task_class
from finetune_kit.task import TaskError, TaskSettings
from tests.conftest import FIXTURES, NEGATIVE, POSITIVE, build_tiny_encoder, write_csv
from tests.test_token_classification import SENTENCES, conll_text

TEXTS = [POSITIVE[0], NEGATIVE[1], POSITIVE[3], NEGATIVE[4]]
PAIRS = [("the cat sat on the mat", "the cat sat"), ("she went to work", "the dog ran"),
         ("a man made a film", "a film was made")]
WORDS = [text.split() for text, _ in SENTENCES[:6]]
# Short runs that still learn the toy data well enough for clear-cut predictions.
QUICK = {"max_length": 32, "batch_size": 8, "learning_rate": 1e-2, "report_plots": False, "bootstrap_resamples": 0}


def build_tiny_roberta(directory: Path) -> Path:
    """A 2-layer RoBERTa (positions after padding index 0, two token types for pairs) with the
    fixture's WordPiece tokenizer, which transformers' pipelines read as well as a BPE one."""
    tokenizer = BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt"), do_lower_case=True)
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                           pad_token_id=tokenizer.pad_token_id, type_vocab_size=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("encoders")
    return {"bert": str(build_tiny_encoder(root / "bert")), "roberta": str(build_tiny_roberta(root / "roberta"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    texts = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    pairs = [{"text": a, "text_pair": b, "label": label} for a, b, label in [
        ("the cat sat on the mat", "the cat sat", "entail"), ("the dog ran in the park", "the cat sat", "other"),
        ("a man made a film", "a film was made", "entail"), ("she went to work", "the dog ran", "other")]]
    tags = root / "tags.conll"
    tags.write_text(conll_text(SENTENCES * 2), encoding="utf-8")
    return {"text-classification": write_csv(root / "texts.csv", texts * 2),
            "pair-classification": write_csv(root / "pairs.csv", pairs * 4), "token-classification": tags}


TRAINED: dict[tuple[str, str, bool], Path] = {}


@pytest.fixture(scope="module")
def trained(encoders, data, tmp_path_factory):
    """Train (once per module) a model of a task on an encoder, fully or with LoRA."""
    root = tmp_path_factory.mktemp("runs")

    def train(task: str, kind: str = "bert", lora: bool = False, **settings) -> Path:
        key = (task, kind, lora, json.dumps(settings, sort_keys=True))
        if key not in TRAINED:
            out = root / f"{task}-{kind}-{'lora' if lora else 'full'}-{len(TRAINED)}"
            steps = 30 if task == "token-classification" else 12
            fk.train(task=task, model=encoders[kind], train_file=str(data[task]), output_dir=str(out), lora=lora,
                     max_steps=steps, **{**QUICK, **settings})
            TRAINED[key] = out
        return TRAINED[key]

    yield train
    TRAINED.clear()


def manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "finetune_kit.json").read_text(encoding="utf-8"))


def assert_loads_whole(auto_class, model_dir: Path):
    model, info = auto_class.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model


def assert_same_classes(got: list[dict], expected: list[dict]) -> None:
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-4)


def pipeline_entities(tagger, words: list[str]) -> list[tuple[int, int, str]]:
    """The pipeline's entities of a sentence as (first word, one past the last, type)."""
    text = " ".join(words)
    starts = [len(" ".join(words[:i])) + (1 if i else 0) for i in range(len(words))]
    found = []
    for entity in tagger(text):
        first = starts.index(entity["start"])
        last = max(i for i, s in enumerate(starts) if s < entity["end"])
        found.append((first, last + 1, entity["entity_group"]))
    return found


def own_entities(prediction: dict) -> list[tuple[int, int, str]]:
    return [(e["start"], e["end"], e["type"]) for e in prediction["entities"]]


# -- full fine-tuning: the directory is a transformers model -----------------------------------------


@pytest.mark.parametrize(("task", "kind", "saved_class"), [
    ("text-classification", "bert", "BertForSequenceClassification"),
    ("text-classification", "roberta", "RobertaForSequenceClassification"),
    ("pair-classification", "bert", "BertForSequenceClassification"),
])
def test_classifiers_load_in_transformers_and_its_pipeline(trained, task, kind, saved_class):
    model_dir = trained(task, kind)
    assert manifest(model_dir)["transformers_class"] == saved_class
    assert manifest(model_dir)["task_state"]["pooling"] == "transformers"
    model = assert_loads_whole(AutoModelForSequenceClassification, model_dir)
    assert type(model).__name__ == saved_class
    predictor = fk.load(model_dir)
    classify = pipeline("text-classification", model=str(model_dir), device="cpu")
    if task == "pair-classification":
        expected = predictor.predict(PAIRS)
        got = [classify({"text": a, "text_pair": b}) for a, b in PAIRS]
    else:
        expected = predictor.predict(TEXTS)
        got = classify(TEXTS)
    assert_same_classes(got, expected)


def test_tagger_loads_in_transformers_and_its_pipeline(trained):
    model_dir = trained("token-classification")
    assert manifest(model_dir)["transformers_class"] == "BertForTokenClassification"
    assert manifest(model_dir)["task_state"]["head"] == "transformers"
    assert_loads_whole(AutoModelForTokenClassification, model_dir)
    predictions = fk.load(model_dir).predict(WORDS)
    tagger = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first", device="cpu")
    assert any(p["entities"] for p in predictions)
    for words, prediction in zip(WORDS, predictions):
        assert pipeline_entities(tagger, words) == own_entities(prediction), words


def test_head_modules_are_the_transformers_heads(encoders):
    text = get_task_class("text-classification")(TaskSettings())
    text.set_labels(["neg", "pos"])
    model = text.build_model(AutoModel.from_pretrained(encoders["roberta"]))
    assert type(model).__name__ == "RobertaForSequenceClassification" and text.head_modules == ("classifier",)
    assert model.roberta.pooler is None  # RoBERTa's head reads the first token, not the pooler


def test_a_pooler_reading_head_gets_a_new_pooler_when_the_encoder_has_none(encoders):
    """An encoder saved without its pooler (after masked-LM training) still starts a classifier."""
    encoder = AutoModel.from_pretrained(encoders["bert"], add_pooling_layer=False)
    model = transformers_model(AutoModelForSequenceClassification, encoder, num_labels=2)
    assert model.bert is encoder and encoder.pooler is not None
    assert model(input_ids=torch.tensor([[2, 10, 3]])).logits.shape == (1, 2)


# -- LoRA: the directory is a peft adapter of the base encoder -------------------------------------


@pytest.mark.parametrize(("task", "kind", "auto_class"), [
    ("text-classification", "bert", AutoModelForSequenceClassification),
    ("text-classification", "roberta", AutoModelForSequenceClassification),
    ("token-classification", "bert", AutoModelForTokenClassification),
])
def test_lora_directories_load_with_peft_and_export_merged(trained, encoders, tmp_path, task, kind, auto_class):
    from peft import PeftModel

    model_dir = trained(task, kind, lora=True)
    predictor = fk.load(model_dir)
    labels = predictor.labels
    base = auto_class.from_pretrained(encoders[kind], num_labels=len(labels))
    adapted = PeftModel.from_pretrained(base, str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [" ".join(words) for words in WORDS] if task == "token-classification" else TEXTS
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = predictor.model(**inputs).logits
        assert torch.allclose(adapted(**inputs).logits, expected, atol=1e-5)

    merged = fk.export(model_dir, tmp_path / "merged", merge=True)
    assert manifest(merged)["transformers_class"] == type(base).__name__
    plain = assert_loads_whole(auto_class, merged).eval()
    with torch.no_grad():
        assert torch.allclose(plain(**inputs).logits, expected, atol=1e-4)
    if task == "text-classification":
        assert_same_classes(pipeline("text-classification", model=str(merged), device="cpu")(TEXTS),
                            predictor.predict(TEXTS))


# -- finetune-kit's own heads, and models saved before the head was recorded ----------------------


@pytest.mark.parametrize(("task", "options", "own_class"), [
    ("text-classification", {"pooling": "cls"}, "SequenceClassifier"),
    ("token-classification", {"crf": True}, "TokenTagger"),
    ("token-classification", {"head": "finetune-kit"}, "TokenTagger"),
])
def test_own_heads_stay_finetune_kit_models(encoders, data, tmp_path, task, options, own_class):
    out = tmp_path / "own"
    fk.train(task=task, model=encoders["bert"], train_file=str(data[task]), output_dir=str(out), max_steps=1,
             task_options=options, **QUICK)
    assert manifest(out)["transformers_class"] is None
    assert type(fk.load(out).model).__name__ == own_class


@pytest.mark.parametrize(("options", "pooling"), [({}, "cls"), ({"pooling": "mean"}, "mean")])
def test_a_classifier_saved_without_its_head_loads_as_it_was_trained(options, pooling):
    task = get_task_class("text-classification")(TaskSettings(options=options))
    task.load_state({"labels": ["neg", "pos"]}, BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt")))
    assert task.pooling == pooling and task.state()["pooling"] == pooling
    assert task.uses_pooler is False


def test_a_tagger_saved_without_its_head_loads_as_finetune_kits_tagger(encoders):
    task = get_task_class("token-classification")(TaskSettings(text_column="tokens", label_column="tags"))
    assert task.head == "transformers"  # a new tagger without a CRF
    task.load_state({"labels": ["O", "B-PER", "I-PER"], "scheme": "IOB2", "source_scheme": "IOB2"},
                    BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt")))
    assert task.head == "finetune-kit"
    assert type(task.build_model(AutoModel.from_pretrained(encoders["bert"]))).__name__ == "TokenTagger"


def test_a_crf_needs_finetune_kits_tagger():
    task_class = get_task_class("token-classification")
    assert task_class(TaskSettings(options={"crf": True})).head == "finetune-kit"
    with pytest.raises(TaskError, match=r"^task_options.head: crf needs finetune-kit's head; use "
                                        r"head=finetune-kit or leave head unset$"):
        task_class(TaskSettings(options={"crf": True, "head": "transformers"}))


def test_the_encoder_of_a_transformers_classifier_exports_alone(trained, tmp_path):
    from safetensors.torch import load_file

    model_dir = trained("text-classification")
    encoder, info = AutoModel.from_pretrained(fk.export_encoder(model_dir, tmp_path / "encoder"),
                                              output_loading_info=True)
    assert type(encoder).__name__ == "BertModel" and not info["unexpected_keys"]
    assert all(key.startswith("pooler.") for key in info["missing_keys"])  # the encoder alone: no pooler
    trained_embeddings = load_file(model_dir / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(encoder.embeddings.word_embeddings.weight, trained_embeddings)


def test_an_architecture_transformers_has_no_head_of_gets_finetune_kits(encoders):
    """An encoder whose code ships with it has no transformers task class: the task falls back to
    its own head and records it, so that the model loads as it was built."""
    from transformers import BertConfig, BertModel

    class ShippedConfig(BertConfig):
        model_type = "shipped-bert"

    config = ShippedConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16)
    text = get_task_class("text-classification")(TaskSettings())
    text.set_labels(["neg", "pos"])
    model = text.build_model(BertModel(config))
    assert type(model).__name__ == "SequenceClassifier" and model.encoder.pooler is None
    assert text.state()["pooling"] == "cls" and text.uses_pooler is False
    tagger = get_task_class("token-classification")(TaskSettings(text_column="tokens", label_column="tags"))
    tagger.set_labels(["O", "B-PER", "I-PER"])
    assert type(tagger.build_model(BertModel(config))).__name__ == "TokenTagger"
    assert tagger.head == "finetune-kit"
