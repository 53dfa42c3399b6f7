import random

import torch

from finetune_kit.batching import LengthGroupedBatchSampler, padded, sorted_eval_batches


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def _padding(batches, lengths):
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / padded


def test_every_example_once_per_epoch_and_len_matches():
    lengths = _lengths()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == len(sampler) == 32  # ceil(1000 / 32)


def test_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()
    a = LengthGroupedBatchSampler(lengths, 32, seed=1)
    b = LengthGroupedBatchSampler(lengths, 32, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_grouping_cuts_padding_and_plain_shuffle_does_not():
    lengths = _lengths()
    grouped = list(LengthGroupedBatchSampler(lengths, 32, seed=3))
    plain = list(LengthGroupedBatchSampler(lengths, 32, seed=3, group_by_length=False))
    assert _padding(grouped, lengths) < 0.05
    assert _padding(plain, lengths) > 0.3


def test_longest_batch_comes_first():
    lengths = _lengths()
    batches = list(LengthGroupedBatchSampler(lengths, 32, seed=5))
    assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_eval_batches_cover_all_in_sorted_chunks():
    lengths = _lengths(300)
    batches = sorted_eval_batches(lengths, 16, chunk_batches=4)
    assert sorted(i for b in batches for i in b) == list(range(300))
    # each chunk of 64 consecutive examples is served before the next one starts
    first_chunk = [i for b in batches[:4] for i in b]
    assert sorted(first_chunk) == list(range(64))
    assert [lengths[i] for i in first_chunk] == sorted((lengths[i] for i in range(64)), reverse=True)


def test_padded_fills_rows_to_the_longest_or_a_given_width():
    assert padded([[1, 2, 3], [4]], -1).tolist() == [[1, 2, 3], [4, -1, -1]]
    assert padded([[5], []], 0, width=3).tolist() == [[5, 0, 0], [0, 0, 0]]
    assert padded([[7, 8]], -100).dtype == torch.long


def test_input_padder_pads_model_inputs_and_extras_and_drops_the_rest(tiny_encoder):
    from transformers import AutoTokenizer

    from finetune_kit.batching import InputPadder

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    features = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 1, "example_index": 0},
                {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0, "example_index": 1}]
    batch = InputPadder(tokenizer)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, tokenizer.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert "labels" not in InputPadder(tokenizer, extra=())(features)
