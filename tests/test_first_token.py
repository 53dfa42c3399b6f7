"""The last encoder layer computed past its attention for the first position only, where the
head reads nothing else: the same logits and gradients, the cut where it is meant to be and
nowhere else."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForMultipleChoice, AutoModelForSequenceClassification
from transformers.models.bert.modeling_bert import BertIntermediate

import finetune_kit as fk
from finetune_kit import registry
from finetune_kit.first_token import ENV_SWITCH, compute_first_token_only
from finetune_kit.task import TaskSettings
from tests.conftest import NEGATIVE, POSITIVE

SIZES = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=64)


def tiny_config(model_type: str, **changes: object):
    sizes = dict(SIZES)
    if model_type == "electra":
        sizes["embedding_size"] = 32
    if model_type == "distilbert":
        sizes = dict(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    return AutoConfig.for_model(model_type, **sizes, num_labels=3, **changes)


def last_feed_forward_lengths(model: torch.nn.Module) -> list[int]:
    """The sequence lengths the last layer's feed-forward block is given, recorded as it runs."""
    lengths: list[int] = []
    last = model.base_model.encoder.layer[-1]
    last.intermediate.register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    return lengths


def padded_batch(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, shape, generator=generator)
    mask = torch.ones_like(ids)
    mask[..., 1, 6:] = 0  # one padded row (one padded choice per question)
    return {"input_ids": ids, "attention_mask": mask}


def assert_same_outputs_and_gradients(whole: torch.nn.Module, cut: torch.nn.Module, batch: dict) -> None:
    whole_logits, cut_logits = whole(**batch).logits, cut(**batch).logits
    torch.testing.assert_close(cut_logits, whole_logits, rtol=1e-5, atol=1e-6)
    (whole_logits * torch.arange(whole_logits.numel()).view_as(whole_logits)).sum().backward()
    (cut_logits * torch.arange(cut_logits.numel()).view_as(cut_logits)).sum().backward()
    # Summation order differs, so the tolerance follows the gradients' scale (the keys' biases,
    # whose true gradient is zero, hold rounding noise only).
    scale = max(float(p.grad.abs().max()) for p in whole.parameters() if p.grad is not None)
    for (name, a), (_, b) in zip(whole.named_parameters(), cut.named_parameters()):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6 * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("model_type", ["bert", "roberta", "electra", "deberta-v2"])
@pytest.mark.parametrize("auto_class, shape", [(AutoModelForSequenceClassification, (4, 9)),
                                               (AutoModelForMultipleChoice, (3, 2, 9))])
def test_transformers_heads_give_the_same_logits_and_gradients(model_type, auto_class, shape):
    torch.manual_seed(0)
    whole = auto_class.from_config(tiny_config(model_type)).eval()
    cut = copy.deepcopy(whole)
    assert compute_first_token_only(cut, cut.base_model) is not None
    lengths = last_feed_forward_lengths(cut)
    assert_same_outputs_and_gradients(whole, cut, padded_batch(shape))
    assert lengths == [1]  # the cut happened: the last feed-forward block ran on one position


def test_the_encoder_called_alone_computes_every_token():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert")).eval()
    batch = padded_batch((2, 7))
    whole = model.base_model(**batch).last_hidden_state
    compute_first_token_only(model, model.base_model)
    model(**batch)  # the task model's forward, cut
    alone = model.base_model(**batch).last_hidden_state
    assert alone.shape == (2, 7, 32)
    torch.testing.assert_close(alone, whole)


def test_a_model_that_raises_leaves_the_cut_off():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert")).eval()
    hooks = compute_first_token_only(model, model.base_model)
    with pytest.raises(Exception):
        model(input_ids=torch.full((2, 300), 5))  # longer than the position table
    assert hooks.active == 0
    assert model.base_model(**padded_batch((2, 7))).last_hidden_state.shape[1] == 7


def test_under_lora_the_cut_applies_with_the_same_logits():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    whole = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value", "dense"],
                                            modules_to_save=["classifier"])).eval()
    for module in whole.modules():  # LoRA's B starts at zero; give it weight so the adapter counts
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight)
    cut = copy.deepcopy(whole)
    assert compute_first_token_only(cut, cut.base_model.model.base_model) is not None
    lengths = last_feed_forward_lengths(cut.base_model.model)
    assert_same_outputs_and_gradients(whole, cut, padded_batch((4, 9)))
    assert lengths == [1]


@pytest.mark.parametrize("model_type, changes", [
    ("distilbert", {}),                        # another layer layout
    ("gpt2", {}),                              # not an encoder of the list
    ("electra", {"summary_type": "mean"}),     # a multiple-choice head that reads every token
    ("bert", {"is_decoder": True}),
])
def test_encoders_it_does_not_know_to_allow_it_are_left_whole(model_type, changes):
    config = (tiny_config(model_type, **changes) if model_type != "gpt2"
              else AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=2, vocab_size=100))
    model = AutoModelForSequenceClassification.from_config(config)
    assert compute_first_token_only(model, model.base_model) is None


def test_the_environment_switch_turns_it_off(monkeypatch):
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert compute_first_token_only(model, model.base_model) is None


@pytest.mark.parametrize("task, options, reads_first", [
    ("text-classification", {}, True),
    ("text-classification", {"pooling": "cls"}, True),
    ("text-classification", {"pooling": "pooler"}, True),
    ("text-classification", {"pooling": "mean"}, False),
    ("pair-classification", {}, True),
    ("multi-label-classification", {}, True),
    ("regression", {}, True),
    ("multiple-choice", {}, True),
    ("token-classification", {}, False),
    ("span-ner", {}, False),
    ("question-answering", {}, False),
    ("masked-lm", {}, False),
])
def test_which_heads_read_the_first_position_only(task, options, reads_first):
    assert registry.get_task_class(task)(TaskSettings(options=options)).reads_first_token_only is reads_first


@pytest.mark.parametrize("pooling, cut", [("transformers", True), ("cls", True), ("mean", False)])
def test_training_and_prediction_cut_the_last_layer_where_the_head_reads_the_first_token(
        tiny_encoder, sentiment_files, tmp_path, monkeypatch, pooling, cut):
    lengths: list[int] = []
    feed_forward = BertIntermediate.forward

    def recording(self, hidden_states):
        lengths.append(hidden_states.shape[1])
        return feed_forward(self, hidden_states)

    monkeypatch.setattr(BertIntermediate, "forward", recording)
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             validation_file=str(sentiment_files["validation"]), output_dir=str(tmp_path / "m"), batch_size=8,
             max_steps=2, task_options={"pooling": pooling})
    assert (1 in lengths) is cut  # the tiny encoder's 2 layers: every other call is the last layer's
    lengths.clear()
    predictor = fk.load(tmp_path / "m")
    predictions = predictor.predict(POSITIVE[:3] + NEGATIVE[:3])
    assert (1 in lengths) is cut
    monkeypatch.setenv(ENV_SWITCH, "0")
    lengths.clear()
    whole = fk.load(tmp_path / "m").predict(POSITIVE[:3] + NEGATIVE[:3])
    assert 1 not in lengths
    for a, b in zip(predictions, whole):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


@pytest.mark.parametrize("checkpointing", ["transformers", "checkpoint_wrapper"])
def test_a_checkpointed_last_layer_is_left_whole_and_trains(checkpointing):
    """Checkpointing runs the layer again in the backward pass, outside the task model's forward:
    it must see the shapes of the first run, so the cut stays off."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from transformers.models.bert.modeling_bert import BertLayer

    torch.manual_seed(0)
    whole = AutoModelForSequenceClassification.from_config(tiny_config("bert")).eval()
    cut = copy.deepcopy(whole)
    compute_first_token_only(cut, cut.base_model)
    if checkpointing == "transformers":
        cut.gradient_checkpointing_enable()
        cut.train()
        for module in cut.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    else:
        apply_activation_checkpointing(cut, check_fn=lambda module: isinstance(module, BertLayer))
    lengths: list[int] = []
    [intermediate] = [m for m in cut.base_model.encoder.layer[-1].modules() if isinstance(m, BertIntermediate)]
    intermediate.register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    assert_same_outputs_and_gradients(whole, cut, padded_batch((4, 9)))
    assert lengths and set(lengths) == {9}
