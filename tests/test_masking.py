"""Masked-LM masking and packing: the statistics of many draws against the specified rates,
whole words and spans kept whole, no special token ever touched, no token lost in packing."""

from collections import Counter

import numpy as np
import pytest

from finetune_kit.masking import (
    IGNORE_INDEX,
    NOT_A_WORD,
    MaskingScheme,
    RandomTokens,
    mask_sequence,
    pack,
    span_boundaries,
    words_of,
)

CLS, SEP, MASK, VOCAB = 1, 2, 3, 1000
SPECIALS = (0, CLS, SEP, MASK)


def sequence(word_lengths: list[list[int]], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """[CLS] segment [SEP] segment [SEP]...: each segment a list of word lengths in subwords;
    ids drawn from the non-special vocabulary."""
    ids, words, number = [CLS], [NOT_A_WORD], 0
    for segment in word_lengths:
        for length in segment:
            ids += rng.integers(10, VOCAB, size=length).tolist()
            words += [number] * length
            number += 1
        ids.append(SEP)
        words.append(NOT_A_WORD)
    return ids, words


def draws(scheme: MaskingScheme, word_lengths: list[list[int]], n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    uniform = RandomTokens(VOCAB, SPECIALS)
    for _ in range(n):
        ids, words = sequence(word_lengths, rng)
        yield ids, words, mask_sequence(ids, words, scheme, MASK, uniform, rng)


def outcome_shares(results) -> tuple[float, float, float]:
    """Of the predicted units: the share turned into [MASK], into other tokens, left unchanged."""
    counts = Counter()
    for ids, _, masked in results:
        for first, last in masked.units:
            new, old = masked.input_ids[first:last + 1], ids[first:last + 1]
            counts["mask" if all(t == MASK for t in new) else "same" if new == old else "random"] += 1
    total = sum(counts.values())
    return counts["mask"] / total, counts["random"] / total, counts["same"] / total


def test_token_masking_predicts_15_percent_with_80_10_10_replacement():
    results = list(draws(MaskingScheme("token"), [[1] * 60, [1] * 40], 2000))
    for ids, words, masked in results:
        predicted = [i for i, label in enumerate(masked.labels) if label != IGNORE_INDEX]
        assert len(predicted) == 15  # 15% of the 100 maskable tokens, exactly
        assert all(masked.labels[i] == ids[i] for i in predicted)  # labels are the original tokens
        assert all(words[i] != NOT_A_WORD for i in predicted)
        untouched = [i for i in range(len(ids)) if i not in set(predicted)]
        assert all(masked.input_ids[i] == ids[i] for i in untouched)
    mask, random, same = outcome_shares(results)  # 30,000 predicted tokens: sd of a share ~0.002
    assert mask == pytest.approx(0.8, abs=0.01)
    assert random == pytest.approx(0.1, abs=0.01)
    assert same == pytest.approx(0.1, abs=0.01)


def test_other_rates_and_shares_are_followed():
    scheme = MaskingScheme("token", rate=0.3, mask_share=0.5, random_share=0.5)
    results = list(draws(scheme, [[1] * 50], 1000))
    assert all(sum(label != IGNORE_INDEX for label in m.labels) == 15 for _, _, m in results)
    mask, random, same = outcome_shares(results)
    # a random draw hits the original token 1 time in ~990
    assert (mask, same) == (pytest.approx(0.5, abs=0.02), pytest.approx(0, abs=0.003))


def test_random_replacements_follow_unigram_counts_and_never_draw_special_tokens():
    counts = np.zeros(VOCAB)
    counts[[10, 11, 12]] = [6, 3, 1]
    counts[CLS] = 100  # a special token seen in the data is still never drawn
    drawn = RandomTokens(VOCAB, SPECIALS, counts).draw(np.random.default_rng(0), 20000)
    shares = np.bincount(drawn, minlength=VOCAB)[[10, 11, 12]] / len(drawn)
    assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.01)
    assert set(np.unique(drawn)) == {10, 11, 12}
    uniform = RandomTokens(VOCAB, SPECIALS).draw(np.random.default_rng(1), 50000)
    assert not set(uniform) & set(SPECIALS)
    assert len(np.unique(uniform)) > 990  # every ordinary id has a chance


def test_whole_word_masking_never_splits_a_word():
    word_lengths = [[1, 3, 2, 1, 4, 1, 2, 1, 1, 3] * 4, [2, 1, 1, 3] * 5]
    maskable = sum(map(sum, word_lengths))
    results = list(draws(MaskingScheme("whole-word"), word_lengths, 1000))
    predicted_total = maskable_total = 0
    for ids, words, masked in results:
        for first, last in words_of(words):
            flags = {masked.labels[i] != IGNORE_INDEX for i in range(first, last + 1)}
            assert len(flags) == 1, "a word was masked in part"
        predicted = sum(label != IGNORE_INDEX for label in masked.labels)
        assert predicted <= round(0.15 * maskable)  # never beyond the budget
        predicted_total += predicted
        maskable_total += maskable
    assert predicted_total / maskable_total == pytest.approx(0.15, abs=0.005)
    mask, random, same = outcome_shares(results)  # per word: the whole word gets one treatment
    assert (mask, random, same) == (pytest.approx(0.8, abs=0.015), pytest.approx(0.1, abs=0.015),
                                    pytest.approx(0.1, abs=0.015))


def test_span_lengths_follow_the_clipped_geometric_distribution():
    scheme = MaskingScheme("span")
    expected = 0.2 * 0.8 ** np.arange(10)
    expected /= expected.sum()
    assert scheme.span_length_probabilities() == pytest.approx(expected)
    assert float(np.arange(1, 11) @ expected) == pytest.approx(3.8, abs=0.05)  # SpanBERT's mean span length
    lengths = []
    for _, words, masked in draws(scheme, [[1] * 2000], 60):
        spans = masked.units
        word_of = {i: w for i, w in enumerate(words)}
        lengths += [word_of[last] - word_of[first] + 1 for first, last in spans[:-1]]  # not the budget-cut one
        lengths += [word_of[spans[-1][1]] - word_of[spans[-1][0]] + 1]
    observed = np.bincount(lengths, minlength=12)[1:] / len(lengths)  # ~4,700 spans: sd of a share <= 0.008
    assert observed[:10] == pytest.approx(expected, abs=0.025)
    assert observed[10] == 0  # nothing longer than 10 words


def test_spans_are_whole_words_inside_one_segment_and_spend_the_budget():
    word_lengths = [[1, 2, 1, 1, 3, 1] * 5, [1, 1, 2] * 4, [2, 1] * 10]
    maskable = sum(map(sum, word_lengths))
    results = list(draws(MaskingScheme("span"), word_lengths, 1500))
    predicted_total = 0
    for ids, words, masked in results:
        starts = {first for first, _ in words_of(words)}
        ends = {last for _, last in words_of(words)}
        for first, last in masked.units:
            assert first in starts and last in ends  # whole words
            assert all(words[i] != NOT_A_WORD for i in range(first, last + 1))  # no special token inside
        assert all(masked.labels[i] == IGNORE_INDEX for i, w in enumerate(words) if w == NOT_A_WORD)
        taken = [i for i, label in enumerate(masked.labels) if label != IGNORE_INDEX]
        assert len(taken) == len(set(taken)) == sum(last - first + 1 for first, last in masked.units)  # no overlap
        predicted_total += len(taken)
    # the budget is reached, the last span stops at the word that reaches it (over by < 1 word)
    assert predicted_total / (maskable * len(results)) == pytest.approx(0.15, abs=0.01)
    mask, random, same = outcome_shares(results)  # one treatment per span
    assert (mask, random, same) == (pytest.approx(0.8, abs=0.02), pytest.approx(0.1, abs=0.02),
                                    pytest.approx(0.1, abs=0.02))


def test_span_boundaries_point_just_outside_each_span():
    left, right, inside = span_boundaries([(2, 4), (7, 7)], length=10, max_position=1)
    assert left == [-1, -1, 1, 1, 1, -1, -1, 6, -1, -1]
    assert right == [-1, -1, 5, 5, 5, -1, -1, 8, -1, -1]
    assert inside == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]  # positions past max_position share the last


def test_scheme_settings_are_checked():
    for bad in ({"strategy": "words"}, {"rate": 0}, {"mask_share": 0.95, "random_share": 0.1}, {"span_p": 0}):
        with pytest.raises(ValueError):
            MaskingScheme(**bad)


# -- packing ---------------------------------------------------------------------------------

def texts(rng: np.random.Generator, n: int) -> list[tuple[int, list[int], list[int]]]:
    out = []
    for row in range(n):
        length = int(rng.integers(1, 40))
        ids = rng.integers(10, VOCAB, size=length).tolist()
        words = sorted(rng.integers(0, length, size=length).tolist())
        out.append((row, ids, words))
    return out


def test_packing_loses_no_token_and_wastes_no_room():
    source = texts(np.random.default_rng(0), 200)
    packed = pack(source, max_length=32, cls_id=CLS, sep_id=SEP)
    content = [t for seq in packed.input_ids for t in seq if t not in (CLS, SEP)]
    assert content == [t for _, ids, _ in source for t in ids]  # every token, in order
    rows = [r for seq in packed.rows for r in seq if r != -1]
    assert rows == [row for row, ids, _ in source for _ in ids]  # each token knows its text
    for seq, words in zip(packed.input_ids, packed.word_ids):
        assert seq[0] == CLS and seq[-1] == SEP and len(seq) <= 32
        assert [w == NOT_A_WORD for w in words] == [t in (CLS, SEP) for t in seq]
    assert all(len(seq) >= 31 for seq in packed.input_ids[:-1])  # full, but for a [SEP] that did not fit
    # texts split by [SEP]: a sequence holding two texts has a [SEP] between them
    for seq, row_ids in zip(packed.input_ids, packed.rows):
        for i in range(1, len(seq) - 1):
            if row_ids[i] != -1 and row_ids[i + 1] != -1:
                assert row_ids[i] == row_ids[i + 1]


def test_packing_keys_name_each_sequence_by_where_it_starts():
    source = [(0, list(range(10, 60)), list(range(50))), (1, [10, 11], [0, 1])]
    packed = pack(source, max_length=22, cls_id=CLS, sep_id=SEP)
    assert packed.starts == [(0, 0), (0, 20), (0, 40)]  # row 1 joined the third sequence
    assert packed.input_ids[2] == [CLS, *range(50, 60), SEP, 10, 11, SEP]
    word_numbers = [w for words in packed.word_ids for w in words if w != NOT_A_WORD]
    assert word_numbers == list(range(50)) + [50, 51]  # unique across texts


def test_line_packing_keeps_one_text_per_sequence_and_splits_long_ones():
    source = texts(np.random.default_rng(1), 50)
    packed = pack(source, max_length=16, cls_id=CLS, sep_id=SEP, across_texts=False)
    for rows in packed.rows:
        assert len({r for r in rows if r != -1}) == 1
    content = [t for seq in packed.input_ids for t in seq if t not in (CLS, SEP)]
    assert content == [t for _, ids, _ in source for t in ids]
    expected = sum(-(-len(ids) // 14) for _, ids, _ in source)
    assert len(packed.input_ids) == expected
