"""``dropout_masks: fast``: dropout from 16-bit random draws, with the drop probability, the
scaling and the gradient of torch's dropout, and attention that computes what SDPA computes (its
products and softmax in bf16 under bf16 autocast)."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import finetune_kit as fk
from finetune_kit import dropout
from finetune_kit.config import ConfigError, load_config
from finetune_kit.dropout import (
    LEVELS,
    CheapDropout,
    DroppedAttention,
    attention_with_dropout,
    drop_count,
    dropout_masks,
    keep_mask,
    masked_dropout,
)
from tests.conftest import NEGATIVE, POSITIVE, write_csv


def test_the_drop_probability_is_the_nearest_multiple_of_a_65536th_or_torchs_dropout_runs():
    assert drop_count(0.1) == 6554  # 6553.6 rounded
    assert drop_count(0.5) == 32768
    assert drop_count(0.0) is None and drop_count(1.0) is None
    assert drop_count(1e-6) is None  # 16 bits cannot carry it: torch's dropout runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_drops_one_element_in_ten_and_scales_the_rest_so_the_mean_is_kept(dtype):
    torch.manual_seed(0)
    x = torch.ones(1_000_000, dtype=dtype, requires_grad=True)
    with dropout_masks("fast"):
        y = F.dropout(x, p=0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 6554 / LEVELS) < 0.002  # binomial sd 0.0003
    kept_value = 1 / (1 - 6554 / LEVELS)
    assert torch.allclose(y[y != 0].float(), torch.tensor(kept_value), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx = mask * scale: the input was ones
    assert y.dtype == dtype


def test_fast_dropout_leaves_evaluation_and_attention_without_dropout_alone():
    x = torch.randn(100)
    q = x.view(1, 1, 10, 10)
    expected = F.scaled_dot_product_attention(q, q, q)
    torch.manual_seed(0)
    with dropout_masks("fast"):
        assert torch.equal(F.dropout(x, 0.1, training=False), x)
        assert torch.equal(F.scaled_dot_product_attention(q, q, q), expected)
        assert torch.equal(F.scaled_dot_product_attention(q, q, q, dropout_p=0.0), expected)
    drawn = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(1))  # nothing above drew a random number


def test_the_masks_follow_the_seed():
    x = torch.randn(1000)
    with dropout_masks("fast"):
        torch.manual_seed(3)
        first = F.dropout(x, 0.2, training=True)
        torch.manual_seed(3)
        second = F.dropout(x, 0.2, training=True)
        third = F.dropout(x, 0.2, training=True)
    assert torch.equal(first, second) and not torch.equal(second, third)


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_attention_with_dropout_is_sdpa_with_that_mask_on_the_probabilities(mask_kind):
    """With the mask drawn from the same seed, the attention output and its gradients equal
    softmax(q k^T * scale + mask) with the dropout mask applied, times v (float64 throughout)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bool_mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    bool_mask[0, :, :, 3:] = False
    attn_mask = {"bool": bool_mask, "float": torch.zeros(2, 1, 5, 5, dtype=torch.float64).masked_fill(
        ~bool_mask, -1e4), "none": None}[mask_kind]
    count = drop_count(0.3)
    torch.manual_seed(7)
    ours = attention_with_dropout(q, k, v, attn_mask, count, scale=None)
    torch.manual_seed(7)
    keep = keep_mask(torch.empty(2, 3, 5, 5), count).double()
    scores = q @ k.transpose(-2, -1) / 2.0  # head size 4
    if mask_kind != "none":
        scores = scores.masked_fill(~bool_mask, float("-inf"))
    expected = (scores.softmax(-1) * keep / (1 - count / LEVELS)) @ v
    assert torch.allclose(ours, expected, atol=1e-10)
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, expected_grads))


def test_a_query_that_may_attend_to_nothing_goes_to_torchs_sdpa():
    q = torch.randn(1, 1, 3, 4)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 1] = False
    assert CheapDropout._attention(q, q, q, attn_mask=mask, dropout_p=0.1) is None


def test_an_unknown_dropout_masks_value_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="dropout_masks: 'fastest' is not allowed; choose one of torch, fast"):
        load_config(None, task="text-classification", model="m", output_dir=str(tmp_path),
                    train_file="t.csv", dropout_masks="fastest")


def test_training_with_fast_masks_draws_no_bernoulli_and_learns_the_same_way(tiny_encoder, tmp_path):
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train_file = write_csv(tmp_path / "train.csv", rows)
    ops = {}
    for kind in ("torch", "fast"):
        with profile() as prof:
            fk.train(task="text-classification", model=tiny_encoder, train_file=str(train_file),
                     output_dir=str(tmp_path / kind), batch_size=8, max_steps=2, report_plots=False,
                     bootstrap_resamples=0, dropout_masks=kind)
        ops[kind] = {event.key for event in prof.key_averages()}
    assert "aten::bernoulli_" in ops["torch"]
    assert "aten::bernoulli_" not in ops["fast"] and "aten::random_" in ops["fast"]


@pytest.mark.parametrize("autocast_dtype, square_dtype", [(torch.bfloat16, torch.bfloat16),
                                                          (torch.float16, torch.float32)])
def test_under_autocast_attention_with_dropout_computes_in_bf16_or_fp32_for_fp16(autocast_dtype, square_dtype):
    """bf16: queries, keys and values are kept in bf16 (the probabilities are computed again from
    them), and output and gradients stay within bf16's rounding of the float64 result with the
    same mask; fp16 computes in fp32."""
    torch.manual_seed(0)
    length = 24
    q, k, v = (torch.randn(2, 3, length, 8, requires_grad=True) for _ in range(3))
    count = drop_count(0.1)
    saved = []

    def keep(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape[-2:])))
        return tensor

    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=autocast_dtype), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        ours = attention_with_dropout(q, k, v, None, count, scale=None)
    assert {dtype for dtype, shape in saved if shape == (length, 8)} == {square_dtype}
    assert {dtype for dtype, shape in saved if shape == (length, length)} == {torch.bool}
    assert ours.dtype == autocast_dtype

    torch.manual_seed(7)
    kept = keep_mask(torch.empty(2, 3, length, length), count).double()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expected = ((q64 @ k64.transpose(-2, -1) / 8 ** 0.5).softmax(-1) * kept / (1 - count / LEVELS)) @ v64
    assert torch.allclose(ours.double(), expected, atol=3e-2, rtol=3e-2)
    assert not torch.allclose(ours.double(), expected, atol=1e-6)  # rounded, so really run in 16 bits
    grads = torch.autograd.grad(ours.float().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q64, k64, v64))
    for ours_grad, expected_grad in zip(grads, expected_grads):
        assert (ours_grad.double() - expected_grad).norm() <= 3e-2 * expected_grad.norm()


def test_under_bf16_autocast_a_row_masked_with_fp32s_lowest_value_is_uniform_not_nan():
    """transformers masks with fp32's lowest value, which bf16 cannot hold (it rounds to -inf):
    a query whose keys are all masked that way attends uniformly, as in fp32, instead of NaN."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    lowest = torch.finfo(torch.float32).min
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 1] = lowest  # query 1 may attend to nothing
    mask[0, 0, 2, 3] = lowest  # query 2 not to key 3
    count = drop_count(0.1)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attention_with_dropout(q, k, v, mask, count, scale=None).double()
    torch.manual_seed(7)
    kept = keep_mask(torch.empty(1, 2, 4, 4), count).double()
    probs = (q.double() @ k.double().transpose(-2, -1) / 8 ** 0.5 + mask.double()).softmax(-1)
    assert torch.equal(probs[0, :, 1], torch.full((2, 4), 0.25, dtype=torch.float64))
    expected = (probs * kept / (1 - count / LEVELS)) @ v.double()
    assert not ours.isnan().any()
    assert torch.allclose(ours, expected, atol=3e-2, rtol=3e-2)


def autograds_dropped_attention(query, key, value, mask, count):
    """What DroppedAttention computes, as plain autograd operations (the keep mask drawn after
    the softmax, as it is there)."""
    probs = torch.softmax(torch.matmul(query, key.transpose(-2, -1)) + (0 if mask is None else mask), -1)
    return torch.matmul(torch.where(keep_mask(probs, count), probs, 0.0), value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "learned"])
@pytest.mark.parametrize("piece_elements", [dropout.PIECE_ELEMENTS, 1])
def test_dropped_attention_is_autograds_products_softmax_and_where_to_the_bit(dtype, mask_kind, piece_elements,
                                                                              monkeypatch):
    """Output and every gradient (a learned additive mask's too) equal autograd's for the same
    operations, to the bit, in one piece or a batch entry at a time. (A batch entry's 72 draws
    are whole 64-bit words, so the pieces' masks are the whole tensor's.)"""
    monkeypatch.setattr(dropout, "PIECE_ELEMENTS", piece_elements)
    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 2, 6, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = None
    if mask_kind != "none":
        mask = torch.zeros(3, 1, 1, 6, dtype=dtype)
        mask[0, ..., 4:] = torch.finfo(dtype).min
        if mask_kind == "learned":
            mask = torch.randn(1, 2, 6, 6, dtype=dtype, requires_grad=True)
    inputs = [t for t in (query, key, value, mask) if t is not None and t.requires_grad]
    grad = torch.randn(3, 2, 6, 8, dtype=dtype)
    count = drop_count(0.1)
    torch.manual_seed(5)
    ours = DroppedAttention.apply(query, key, value, mask, count)
    torch.manual_seed(5)
    torchs = autograds_dropped_attention(query, key, value, mask, count)
    assert torch.equal(ours, torchs)
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(torchs, inputs, grad), strict=True):
        assert torch.equal(a, b)


def new_float_tensors(run, inputs):
    """The float tensors that ``run()`` and its backward pass make, by element count."""
    made = []

    class NewTensors(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            given = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                     if isinstance(t, torch.Tensor)}
            made.extend(t.numel() for t in pytree.tree_leaves(result) if isinstance(t, torch.Tensor)
                        and t.is_floating_point() and t.untyped_storage().data_ptr() not in given)
            return result

    with NewTensors():
        torch.autograd.grad(run().sum(), inputs)
    return made


def test_dropped_attention_makes_no_whole_queries_by_keys_float_tensor_only_piece_sized_buffers(monkeypatch):
    """A batch entry at a time: the forward pass's scores and float mask and the backward pass's
    scores, float mask and gradient are five buffers of one entry's size; autograd's operations
    make seven float tensors of the whole batch's."""
    monkeypatch.setattr(dropout, "PIECE_ELEMENTS", 1)
    torch.manual_seed(0)
    inputs = query, key, value = tuple(torch.randn(4, 3, 6, 8, requires_grad=True) for _ in range(3))
    mask = torch.zeros(4, 1, 1, 6)
    count = drop_count(0.1)
    whole, entry = 4 * 3 * 6 * 6, 3 * 6 * 6
    ours = new_float_tensors(lambda: DroppedAttention.apply(query, key, value, mask, count), inputs)
    assert ours.count(whole) == 0 and ours.count(entry) == 5
    torchs = new_float_tensors(lambda: autograds_dropped_attention(query, key, value, mask, count), inputs)
    assert torchs.count(whole) == 7


def test_attention_on_heads_viewed_from_a_hidden_state_copies_them_once_not_in_every_piece(monkeypatch):
    """Queries, keys and values come as views of a (batch, length, heads x size) tensor, as an
    encoder's self-attention makes them: each is made contiguous once, after which a piece's heads
    are its products' operands as they are, where a piece of two or more such entries would be
    copied for each product (twelve copies a piece, forward and backward)."""
    batch, length, heads, size = 4, 6, 3, 8
    monkeypatch.setattr(dropout, "PIECE_ELEMENTS", 2 * heads * length * length)  # two entries a piece
    torch.manual_seed(0)
    hidden = tuple(torch.randn(batch, length, heads * size, requires_grad=True) for _ in range(3))
    copied = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.clone.default, torch.ops.aten.contiguous.default):
                copied.append(args[0].numel())
            return func(*args, **(kwargs or {}))

    def run():
        q, k, v = (h.view(batch, length, heads, size).transpose(1, 2) for h in hidden)
        out = attention_with_dropout(q, k, v, torch.zeros(batch, 1, 1, length), drop_count(0.1), None)
        return out.transpose(1, 2).reshape(batch, length, heads * size)

    with Copies():
        torch.autograd.grad(run().sum(), hidden)
    assert copied and set(copied) == {batch * length * heads * size}  # whole tensors only, no piece


def test_attention_with_dropout_keeps_no_float_queries_by_keys_tensor_for_the_backward_pass():
    """Only the bool mask; the probabilities are computed again in the backward pass."""
    q, k, v = (torch.randn(2, 3, 6, 4, requires_grad=True) for _ in range(3))
    saved = {}

    def keep(tensor):
        if tuple(tensor.shape[-2:]) == (6, 6):
            saved[tensor.untyped_storage().data_ptr()] = tensor.dtype
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        attention_with_dropout(q, k, v, None, drop_count(0.1), scale=None)
    assert list(saved.values()) == [torch.bool]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fast_dropout_is_where_and_the_scale_to_the_bit_and_keeps_only_the_bool_mask(dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 5, 8, dtype=dtype, requires_grad=True)
    grad = torch.randn(4, 5, 8, dtype=dtype)
    count = drop_count(0.1)
    saved = []
    torch.manual_seed(5)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
        ours = masked_dropout(x, count)
    torch.manual_seed(5)
    torchs = torch.where(keep_mask(x, count), x, 0.0).mul_(1 / (1 - count / LEVELS))
    assert ours.dtype == dtype and torch.equal(ours, torchs) and saved == [torch.bool]
    assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(torchs, x, grad)[0])


def test_dropped_attentions_backward_keeps_fp32_when_called_inside_a_bf16_autocast_block():
    torch.manual_seed(0)
    inputs = [torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3)]
    count = drop_count(0.1)
    torch.manual_seed(5)
    with torch.autocast("cpu", enabled=False):
        out = DroppedAttention.apply(*inputs, None, count)
    torch.manual_seed(5)
    expected = torch.autograd.grad(autograds_dropped_attention(*inputs, None, count).sum(), inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = torch.autograd.grad(out.sum(), inputs)
    for ours, torchs in zip(grads, expected):
        assert ours.dtype == torch.float32 and torch.equal(ours, torchs)


def test_dropped_attentions_gradients_taken_with_create_graph_are_the_same_and_a_second_derivative_is_refused():
    torch.manual_seed(0)
    inputs = [torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3)]
    count = drop_count(0.1)
    torch.manual_seed(5)
    out = DroppedAttention.apply(*inputs, None, count)
    plain = torch.autograd.grad(out.sum(), inputs, retain_graph=True)
    with_graph = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, with_graph, strict=True))
    with pytest.raises(RuntimeError):
        torch.autograd.grad(with_graph[0].sum(), inputs[0])
