"""Single-process training on the CPU keeps the embedding matrices' gradients in buffers that live
across steps (finetune_kit/embedding_gradient.py): the same weights to the bit as torch's own
embedding backward, with gradient accumulation, padding ids and a tied output layer."""

import contextlib
import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

import finetune_kit as fk
from finetune_kit import trainer
from finetune_kit.embedding_gradient import KeptGradient, keeps_gradient, kept_embedding_gradients
from tests.conftest import NEGATIVE, POSITIVE, one_torch_thread, write_csv

PAD = 0
single_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, pad_token_id=PAD)


def batch(generator: torch.Generator) -> torch.Tensor:
    """Ids with repeats inside a row and across rows, and padding at the end of each row."""
    ids = torch.randint(1, 300, (4, 9), generator=generator)
    ids[:, 0] = 7
    ids[1, 3:6] = 11
    ids[:, -2:] = PAD
    return ids


def train(model: nn.Module, kept: bool, steps: int = 3, accumulate: int = 2) -> list[torch.Tensor]:
    """AdamW steps, each over ``accumulate`` batches; returns the word embeddings' gradient of each
    step, as the optimizer saw it."""
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gradients = []
    with kept_embedding_gradients(model) if kept else contextlib.nullcontext():
        for _ in range(steps):
            for _ in range(accumulate):
                ids = batch(generator)
                if isinstance(model, BertForMaskedLM):
                    loss = model(input_ids=ids, labels=torch.where(ids == PAD, -100, ids)).loss
                else:
                    loss = model(input_ids=ids, labels=torch.randint(0, 2, (4,), generator=generator)).loss
                loss.backward()
            gradients.append(model.bert.embeddings.word_embeddings.weight.grad.clone())
            optimizer.step()
            optimizer.zero_grad()
    return gradients


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("accumulate", [1, 3])
def test_training_with_kept_gradients_gives_torchs_weights_to_the_bit(accumulate):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config())
    twin = copy.deepcopy(model)
    torchs = train(model, kept=False, accumulate=accumulate)
    kept = train(twin, kept=True, accumulate=accumulate)
    for mine, theirs in zip(kept, torchs, strict=True):
        assert torch.equal(mine, theirs)
        assert not mine[PAD].any()  # padding_idx gets no gradient
    assert_same_parameters(model, twin)


def test_a_word_embedding_tied_to_the_output_layer_keeps_torchs_lookup():
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config())
    embeddings = model.bert.embeddings
    assert model.cls.predictions.decoder.weight is embeddings.word_embeddings.weight
    with kept_embedding_gradients(model) as kept:
        assert [k.embedding for k in kept] == [embeddings.position_embeddings, embeddings.token_type_embeddings]
    twin = copy.deepcopy(model)
    train(model, kept=False)
    train(twin, kept=True)
    assert_same_parameters(model, twin)


def test_the_gradient_lives_in_one_buffer_across_steps():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config())
    weight = model.bert.embeddings.word_embeddings.weight
    generator = torch.Generator().manual_seed(1)
    addresses = []
    with kept_embedding_gradients(model) as kept:
        for _ in range(3):
            model(input_ids=batch(generator), labels=torch.zeros(4, dtype=torch.long)).loss.backward()
            addresses.append(weight.grad.data_ptr())
            model.zero_grad(set_to_none=True)
        assert [k.embedding for k in kept] == [model.bert.embeddings.word_embeddings,
                                               model.bert.embeddings.position_embeddings,
                                               model.bert.embeddings.token_type_embeddings]
    assert len(set(addresses)) == 1


def test_rows_of_an_earlier_step_do_not_leak_into_the_next():
    embedding = nn.Embedding(10, 3, padding_idx=PAD)
    with kept_embedding_gradients(embedding):
        embedding(torch.tensor([[1, 2, PAD]])).sum().backward()
        embedding.weight.grad = None  # what the optimizer's zero_grad does
        embedding(torch.tensor([[3, 3]])).sum().backward()
    expected = torch.zeros(10, 3)
    expected[3] = 2.0
    assert torch.equal(embedding.weight.grad, expected)


def test_only_plain_trainable_embeddings_with_dense_gradients_are_taken_over():
    assert keeps_gradient(nn.Embedding(10, 3))
    assert not keeps_gradient(nn.Embedding(10, 3, sparse=True))
    assert not keeps_gradient(nn.Embedding(10, 3, max_norm=1.0))
    assert not keeps_gradient(nn.Embedding(10, 3, scale_grad_by_freq=True))
    frozen = nn.Embedding(10, 3)
    frozen.weight.requires_grad_(False)
    assert not keeps_gradient(frozen)
    assert not keeps_gradient(nn.Linear(3, 3))


def test_outside_the_block_and_without_gradients_torchs_lookup_runs():
    embedding = nn.Embedding(10, 3)
    ids = torch.tensor([1, 2])
    with kept_embedding_gradients(embedding):
        with torch.no_grad():
            assert embedding(ids).grad_fn is None
        assert type(embedding(ids).grad_fn).__name__ == "_LookupBackward"
    assert type(embedding(ids).grad_fn).__name__ == "EmbeddingBackward0"


def fine_tune(tiny_encoder, tmp_path, name: str) -> dict:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train_file = write_csv(tmp_path / "train.csv", rows)
    run = tmp_path / name
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(train_file),
             validation_file=str(train_file), output_dir=str(run), batch_size=4, epochs=2,
             gradient_accumulation_steps=2, report_plots=False, bootstrap_resamples=0)
    return load_file(run / "model.safetensors")


def test_the_training_loop_keeps_the_gradients_and_saves_torchs_weights(tiny_encoder, tmp_path, monkeypatch):
    added = []
    real_add_rows = KeptGradient.add_rows

    def recording(self, ids, grad_output):
        added.append(self.embedding.num_embeddings)
        return real_add_rows(self, ids, grad_output)

    monkeypatch.setattr(KeptGradient, "add_rows", recording)
    kept = fine_tune(tiny_encoder, tmp_path, "kept")
    assert added and max(added) > 100  # the word embeddings went through the kept buffer
    monkeypatch.setattr(trainer, "kept_embedding_gradients", lambda model: contextlib.nullcontext())
    added.clear()
    torchs = fine_tune(tiny_encoder, tmp_path, "torch")
    assert not added
    assert kept.keys() == torchs.keys()
    for name in kept:
        assert torch.equal(kept[name], torchs[name]), name


def test_the_hook_is_gone_after_the_block():
    embedding = nn.Embedding(10, 3)
    with kept_embedding_gradients(embedding) as kept:
        embedding(torch.tensor([1])).sum().backward()
        assert kept[0].buffer is not None
    assert kept[0].buffer is None
    assert not embedding._forward_hooks
    assert keeps_gradient(embedding)
