"""Gradient accumulation: 4 batches of 8 accumulated make the optimizer step of one batch of 32.

Dropout is off (encoder and head) so the forward passes are deterministic, and batches are not
grouped by length, so the shuffled order puts the first batch of 32's examples, in order, into
the first 4 batches of 8. A run of batches of 8 without accumulation must differ, or the
comparison would prove nothing.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import finetune_kit as fk
from tests.conftest import NEGATIVE, POSITIVE, build_tiny_encoder, write_csv


@pytest.fixture(scope="module")
def encoder_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("bert-no-dropout")
    return str(build_tiny_encoder(directory, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", rows * 2)  # 32 rows, lengths 4 to 8


def one_step(encoder: str, train_file: Path, output_dir: Path, batch_size: int, accumulation: int,
             max_grad_norm: float | None = 1.0) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Train for exactly one optimizer step; the saved weights and the gradients it stepped with
    (after clipping)."""
    stepped_with: list[list[torch.Tensor]] = []

    def record_gradients(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        stepped_with.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]
                             if p.grad is not None])

    hook = register_optimizer_step_pre_hook(record_gradients)
    try:
        fk.train(task="text-classification", model=encoder, train_file=str(train_file), output_dir=str(output_dir),
                 batch_size=batch_size, gradient_accumulation_steps=accumulation, max_steps=1,
                 group_by_length=False, learning_rate=1e-3, max_grad_norm=max_grad_norm,
                 task_options={"pooling": "cls"})  # a head whose gradients the clipping below reaches
    finally:
        hook.remove()
    assert len(stepped_with) == 1, "one optimizer step, after the last accumulated batch"
    return load_file(output_dir / "model.safetensors"), stepped_with[0]


def assert_all_close(first: list[torch.Tensor], second: list[torch.Tensor], **tolerance: float) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, **tolerance)


def largest_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(first, second))


def test_head_dropout_follows_the_encoder(encoder_without_dropout):
    """The comparison below needs every dropout off; a head must not put back 0.1 for a 0."""
    from finetune_kit_tasks.text_classification import SequenceClassifier
    from transformers import AutoModel

    model = SequenceClassifier(AutoModel.from_pretrained(encoder_without_dropout), num_labels=2)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_accumulated_gradients_are_those_of_one_big_batch(encoder_without_dropout, train_file, tmp_path):
    """Without clipping, the summed gradients of 4 x 8 equal those of 32: each micro-batch's loss
    is scaled by 1/4, and the gradients are not cleared between micro-batches."""
    _, big = one_step(encoder_without_dropout, train_file, tmp_path / "32", 32, 1, max_grad_norm=None)
    _, accumulated = one_step(encoder_without_dropout, train_file, tmp_path / "8x4", 8, 4, max_grad_norm=None)
    _, small = one_step(encoder_without_dropout, train_file, tmp_path / "8", 8, 1, max_grad_norm=None)
    assert_all_close(accumulated, big, rtol=1e-4, atol=1e-6)
    assert largest_difference(small, big) > 1e-4


def test_accumulated_step_updates_like_one_big_batch(encoder_without_dropout, train_file, tmp_path):
    """With clipping on (applied once, to the accumulated gradients; their norm is about 0.5),
    the weights after one step are those of one batch of 32."""
    big, big_gradients = one_step(encoder_without_dropout, train_file, tmp_path / "32", 32, 1, max_grad_norm=0.1)
    accumulated, gradients = one_step(encoder_without_dropout, train_file, tmp_path / "8x4", 8, 4, max_grad_norm=0.1)
    small, _ = one_step(encoder_without_dropout, train_file, tmp_path / "8", 8, 1, max_grad_norm=0.1)
    assert_all_close(gradients, big_gradients, rtol=1e-4, atol=1e-6)
    assert sum(float(g.pow(2).sum()) for g in gradients) ** 0.5 == pytest.approx(0.1, rel=1e-4)  # clipped
    assert big.keys() == accumulated.keys() == small.keys()
    names = sorted(big)
    assert_all_close([accumulated[n] for n in names], [big[n] for n in names], rtol=0, atol=1e-6)
    assert largest_difference([small[n] for n in names], [big[n] for n in names]) > 5e-4
