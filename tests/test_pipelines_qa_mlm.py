"""question-answering and masked-lm with the architecture's own transformers head (the default):
the output directory is what AutoModelForQuestionAnswering / AutoModelForMaskedLM load, with no
missing or unexpected weights; transformers' fill-mask pipeline gives predict's candidates and
scores; the question-answering decoding of transformers' pipeline, run on the logits of the model
transformers loads, gives predict's answers; finetune-kit's earlier heads stay available, and
models saved before the head was recorded load as what they were."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_kit_tasks.masked_lm import (
    MaskedLanguageModel,
    MaskedLMTask,
    score_predicted_positions_only,
)
from finetune_kit_tasks.question_answering import SpanExtractor
from transformers import AutoModelForMaskedLM, AutoModelForQuestionAnswering, pipeline

import finetune_kit as fk
from finetune_kit.masking import IGNORE_INDEX
from finetune_kit.modeling import MANIFEST, load_tokenizer
from finetune_kit.saved_models import load_encoder
from finetune_kit.task import TaskError, TaskSettings
from tests.conftest import FIXTURES, NEGATIVE, POSITIVE
from tests.test_question_answering import toy_squad, write_squad

TEXTS = POSITIVE + NEGATIVE
MASKED = ["a [MASK] movie", "i [MASK] this story", "really boring [MASK]"]
QUESTIONS = [{"question": "who sat", "context": "the dog sat on the park ."},
             {"question": "where", "context": "the cat sat on the mat ."},
             {"question": "what music", "context": "the dog sat on the mat and the cat sat on the park ."}]


def build_tiny_roberta(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 RoBERTa with the fixture's WordPiece tokenizer (its ids for padding,
    [CLS] and [SEP]; two token types, as the tokenizer gives pairs)."""
    from transformers import BertTokenizerFast, RobertaConfig, RobertaModel

    tokenizer = BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt"), do_lower_case=True)
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=258, type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def encoders(tiny_encoder, tmp_path_factory) -> dict[str, str]:
    return {"bert": tiny_encoder, "roberta": str(build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta")))}


def manifest(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def assert_loads_exactly(auto_class, model_dir: Path, class_name: str) -> None:
    model, info = auto_class.from_pretrained(model_dir, output_loading_info=True)
    assert type(model).__name__ == class_name
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


# -- masked-lm -------------------------------------------------------------------------------------
def train_mlm(encoder: str, directory: Path, **options) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train = directory / "train.txt"
    train.write_text("\n".join(TEXTS * 2) + "\n", encoding="utf-8")
    out = directory / "mlm"
    fk.train(task="masked-lm", model=encoder, train_file=str(train), output_dir=str(out), max_steps=3,
             batch_size=8, max_length=24, learning_rate=2e-3, report_plots=False, bootstrap_resamples=0,
             task_options=options)
    return out


@pytest.mark.parametrize("kind, class_name", [("bert", "BertForMaskedLM"), ("roberta", "RobertaForMaskedLM")])
def test_masked_lm_saves_the_transformers_class_and_fill_mask_agrees(encoders, tmp_path, kind, class_name):
    out = train_mlm(encoders[kind], tmp_path)
    saved = manifest(out)
    assert saved["transformers_class"] == class_name and saved["task_state"]["head"] == "transformers"
    assert_loads_exactly(AutoModelForMaskedLM, out, class_name)
    fill = pipeline("fill-mask", model=str(out), top_k=5)
    ours = fk.load(out).predict(MASKED)
    for text, prediction in zip(MASKED, ours):
        [candidates] = prediction["masks"]
        theirs = fill(text)
        assert [c["token"] for c in candidates] == [fill.tokenizer.convert_ids_to_tokens(c["token"]) for c in theirs]
        assert [c["score"] for c in candidates] == pytest.approx([c["score"] for c in theirs], abs=1e-4)


def test_masked_lm_scores_only_the_predicted_positions_as_the_full_forward_would(tiny_encoder):
    """The task's forward of a transformers MLM model scores the predicted positions alone (no
    batch x length x vocabulary output) and gives what transformers' own forward gives there."""
    task = MaskedLMTask(TaskSettings(max_length=16))
    task.load_state({"head": "transformers"}, load_tokenizer(tiny_encoder))
    model = task.build_model(load_encoder(tiny_encoder)).eval()
    assert type(model).__name__ == "BertForMaskedLM" and task.head_modules == ("cls",)
    assert model.fill_head_name == "cls"
    input_ids = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 14, 15, 16, 3, 0]])
    attention = (input_ids != 0).long()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 2], labels[1, 1], labels[1, 3] = 11, 14, 16
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        full = type(model).forward(model, input_ids=input_ids, attention_mask=attention, labels=labels)
    assert "logits" not in out and out.token_loss.shape == input_ids.shape
    assert torch.allclose(out.loss, full.loss, atol=1e-6)  # transformers' loss: the same cross-entropy
    picked = torch.nn.functional.cross_entropy(full.logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX],
                                               reduction="none")
    assert torch.allclose(out.token_loss[labels != IGNORE_INDEX], picked, atol=1e-5)
    # a head that cannot score positions alone: the class's forward, its scores picked
    model.fill_head_name = None
    with torch.no_grad():
        again = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        fills = model(input_ids=input_ids, attention_mask=attention, mask_token_id=torch.tensor(12))
    assert torch.allclose(again.token_loss, out.token_loss, atol=1e-6)
    assert fills.fill_ids[0, 3, 0] == full.logits[0, 3].argmax() and fills.token_predicted.sum() == 1


def test_the_span_boundary_objective_implies_finetune_kits_head(tiny_encoder):
    task = MaskedLMTask(TaskSettings(options={"masking": "span", "sbo": True}))
    assert task.head == "finetune-kit"
    task.load_state({"head": "finetune-kit"}, load_tokenizer(tiny_encoder))
    assert isinstance(task.build_model(load_encoder(tiny_encoder)), MaskedLanguageModel)
    assert task.head_modules == ("lm_head", "span_boundary")
    with pytest.raises(TaskError, match="needs finetune-kit's head; drop head=transformers"):
        MaskedLMTask(TaskSettings(options={"masking": "span", "sbo": True, "head": "transformers"}))


def test_a_new_mlm_head_starts_from_the_checkpoints_own(tiny_encoder, tmp_path):
    """Continued pretraining from a masked-lm model of either head carries its MLM head over."""
    from safetensors.torch import load_file

    for head, name in (("finetune-kit", "lm_head.dense.weight"),
                       ("transformers", "cls.predictions.transform.dense.weight")):
        out = train_mlm(tiny_encoder, tmp_path / head, head=head)
        task = MaskedLMTask(TaskSettings(max_length=16))
        task.load_state({"head": "transformers"}, load_tokenizer(tiny_encoder))
        encoder = load_encoder(str(out))
        encoder.config._name_or_path = str(out)
        model = task.build_model(encoder)
        assert task.head_pretrained, head
        assert torch.equal(model.cls.predictions.transform.dense.weight, load_file(out / "model.safetensors")[name])


# -- question answering ------------------------------------------------------------------------------
def train_qa(encoder: str, directory: Path, unanswerable: bool = False, **options) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = write_squad(directory / "toy.json", toy_squad(unanswerable))
    out = directory / "qa"
    fk.train(task="question-answering", model=encoder, train_file=str(data), output_dir=str(out), max_steps=4,
             batch_size=8, max_length=32, learning_rate=5e-3, report_plots=False, bootstrap_resamples=0,
             task_options=options)
    return out


def window_softmax(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    scores = np.where(keep, logits, -np.inf)
    return np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()


def pipeline_rule_answer(model, tokenizer, question: str, context: str, max_answer_len: int,
                         handle_impossible_answer: bool) -> tuple[str, float]:
    """transformers' question-answering pipeline decoding, for a context of one window: start
    and end probabilities are softmaxes over the context tokens and [CLS]; an answer is the
    context span (at most max_answer_len tokens) with the highest p_start * p_end, its text the
    context between its first token's start and last token's end; with handle_impossible_answer,
    "" when p_start[CLS] * p_end[CLS] is higher."""
    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        out = model(**encoded)
    context_tokens = np.array([s == 1 for s in encoded.sequence_ids(0)])
    keep = context_tokens.copy()
    keep[0] = True  # [CLS]
    start = window_softmax(out.start_logits[0].numpy(), keep)
    end = window_softmax(out.end_logits[0].numpy(), keep)
    spans = np.triu(np.outer(start, end)) - np.triu(np.outer(start, end), max_answer_len)
    spans[~context_tokens, :] = spans[:, ~context_tokens] = 0
    s, e = np.unravel_index(spans.argmax(), spans.shape)
    if handle_impossible_answer and start[0] * end[0] > spans[s, e]:
        return "", float(start[0] * end[0])
    return context[offsets[s][0]:offsets[e][1]], float(spans[s, e])


@pytest.mark.parametrize("kind, class_name, unanswerable", [
    ("bert", "BertForQuestionAnswering", False), ("roberta", "RobertaForQuestionAnswering", True)])
def test_question_answering_saves_the_transformers_class_and_its_answers_agree(encoders, tmp_path, kind,
                                                                               class_name, unanswerable):
    options = {"no_answer_threshold": 0.0} if unanswerable else {}  # the pipeline's decision: null > best
    out = train_qa(encoders[kind], tmp_path, unanswerable, **options)
    saved = manifest(out)
    assert saved["transformers_class"] == class_name and saved["task_state"]["head"] == "transformers"
    assert_loads_exactly(AutoModelForQuestionAnswering, out, class_name)
    predictor = fk.load(out)
    model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(out).eval(), load_tokenizer(str(out))
    for example, ours in zip(QUESTIONS, predictor.predict(QUESTIONS)):
        answer, probability = pipeline_rule_answer(model, tokenizer, example["question"], example["context"],
                                                   predictor.task.options["max_answer_length"], unanswerable)
        assert ours["answer"] == answer, example
        if answer:  # the pipeline's score is exp(our score) over the window's start and end normalisers
            encoded = tokenizer(example["question"], example["context"], return_tensors="pt")
            with torch.no_grad():
                logits = model(**encoded)
            keep = np.array([s == 1 for s in encoded.sequence_ids(0)])
            keep[0] = True
            normaliser = sum(np.log(np.exp(x[0].numpy()[keep]).sum()) for x in (logits.start_logits, logits.end_logits))
            assert probability == pytest.approx(np.exp(ours["score"] - normaliser), rel=1e-4)


def test_the_question_answering_pipeline_where_transformers_has_it(encoders, tmp_path):
    """transformers 5 removed the question-answering pipeline; where it exists, it answers as we do."""
    from transformers.pipelines import SUPPORTED_TASKS

    if "question-answering" not in SUPPORTED_TASKS:
        pytest.skip("this transformers has no question-answering pipeline")
    qa = pipeline("question-answering", model=str(train_qa(encoders["bert"], tmp_path)))
    predictor = fk.load(tmp_path / "qa")
    for example, ours in zip(QUESTIONS, predictor.predict(QUESTIONS)):
        theirs = qa(**example, max_answer_len=predictor.task.options["max_answer_length"], align_to_words=False,
                    max_seq_len=predictor.task.settings.max_length, doc_stride=predictor.task.options["doc_stride"])
        assert theirs["answer"] == ours["answer"]


# -- finetune-kit's heads, and models saved before the head was recorded ------------------------------
def forget_the_head(model_dir: Path) -> None:
    """Make a manifest as one written before the head option existed."""
    written = manifest(model_dir)
    del written["task_state"]["head"]
    written["config"]["task_options"].pop("head")
    written["transformers_class"] = None
    (model_dir / MANIFEST).write_text(json.dumps(written), encoding="utf-8")


def test_models_saved_before_the_head_option_load_with_finetune_kits_heads(tiny_encoder, tmp_path):
    qa = train_qa(tiny_encoder, tmp_path / "q", head="finetune-kit")
    mlm = train_mlm(tiny_encoder, tmp_path / "m", head="finetune-kit")
    assert manifest(qa)["transformers_class"] is None and manifest(mlm)["transformers_class"] is None
    expected = fk.load(qa).predict(QUESTIONS), fk.load(mlm).predict(MASKED)
    for model_dir in (qa, mlm):
        forget_the_head(model_dir)
    qa_predictor, mlm_predictor = fk.load(qa), fk.load(mlm)
    assert isinstance(qa_predictor.model, SpanExtractor) and qa_predictor.task.head == "finetune-kit"
    assert isinstance(mlm_predictor.model, MaskedLanguageModel) and mlm_predictor.task.head == "finetune-kit"
    assert qa_predictor.predict(QUESTIONS) == expected[0]
    assert mlm_predictor.predict(MASKED) == expected[1]


def test_the_forward_replacement_survives_a_copy(tiny_encoder):
    """The replaced forward is bound to its model: a copy (e.g. by a wrapper) calls its own."""
    import copy

    model = score_predicted_positions_only(AutoModelForMaskedLM.from_pretrained(tiny_encoder), 3)
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin and twin.fill_top_k == 3
