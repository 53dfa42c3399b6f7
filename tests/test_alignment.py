"""Words <-> subwords on hand-written cases: pieces, labels for both strategies, windows."""

import pytest
from transformers import BertTokenizerFast

from finetune_kit.alignment import (
    IGNORE_INDEX,
    best_windows,
    plan_windows,
    special_tokens_around,
    subword_labels,
    window_inputs,
    word_pieces,
)
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt"), do_lower_case=True)


def test_word_pieces_split_words_and_never_lose_one(tokenizer):
    ids = tokenizer.convert_tokens_to_ids
    pieces = word_pieces(tokenizer, [["the", "goodness", "Actors", "\u200b", "dog"]])[0]
    assert pieces == [
        ids(["the"]),
        ids(["good", "##ness"]),
        ids(["actor", "##s"]),  # lower-cased, then split
        [tokenizer.unk_token_id],  # a zero-width space becomes no subword at all: [UNK] stands in
        ids(["dog"]),
    ]


def test_special_tokens_around(tokenizer):
    assert special_tokens_around(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


# "the goodness actors": lengths 1, 2, 2; labels O, B-X, I-X; [CLS] before, [SEP] after
OUT, BEGIN, INSIDE = 0, 1, 2
CONTINUATION = {OUT: OUT, BEGIN: INSIDE, INSIDE: INSIDE}


def test_first_subword_labels():
    labels = subword_labels([OUT, BEGIN, INSIDE], [1, 2, 2], capacity=10, prefix_len=1, suffix_len=1,
                            window=(0, 3))
    assert labels == [IGNORE_INDEX, OUT, BEGIN, IGNORE_INDEX, INSIDE, IGNORE_INDEX, IGNORE_INDEX]


def test_all_subword_labels_turn_b_into_i():
    continuation = [CONTINUATION[i] for i in range(3)]
    labels = subword_labels([OUT, BEGIN, INSIDE], [1, 2, 2], capacity=10, prefix_len=1, suffix_len=1,
                            window=(0, 3), continuation=continuation)
    assert labels == [IGNORE_INDEX, OUT, BEGIN, INSIDE, INSIDE, INSIDE, IGNORE_INDEX]


def test_window_inputs_give_first_subword_positions():
    pieces = [[10], [11, 12], [13, 14, 15], [16]]
    ids, positions = window_inputs(pieces, (1, 4), capacity=10, prefix=[1], suffix=[2])
    assert ids == [1, 11, 12, 13, 14, 15, 16, 2]
    assert positions == [1, 3, 6]
    # a word longer than the window keeps only its first subwords
    ids, positions = window_inputs([[7, 8, 9, 10]], (0, 1), capacity=2, prefix=[1], suffix=[2])
    assert ids == [1, 7, 8, 2] and positions == [1]


def test_plan_windows_by_hand():
    # 30 one-subword words, 10 per window, overlap of 4 words
    assert plan_windows([1] * 30, capacity=10, stride=4) == [(0, 10), (6, 16), (12, 22), (18, 28), (24, 30)]
    # whole words only: 3-subword words, 7 per window -> two words a window, one shared
    assert plan_windows([3] * 5, capacity=7, stride=3) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    # stride 0: no overlap; a sentence that fits: one window
    assert plan_windows([1] * 5, capacity=2, stride=0) == [(0, 2), (2, 4), (4, 5)]
    assert plan_windows([2, 2], capacity=10, stride=4) == [(0, 2)]
    # a word longer than the window takes a window of its own, and the next window moves on
    assert plan_windows([20, 1, 1], capacity=5, stride=1) == [(0, 1), (1, 3)]


def test_best_windows_by_hand():
    windows = [(0, 10), (6, 16), (12, 22), (18, 28), (24, 30)]
    owners = best_windows([1] * 30, windows, capacity=10)
    # in the overlap 6..9, words 6, 7 have more context in window 0 (3 and 2 words on their
    # short side) and 8, 9 in window 1; the last window has 6 words: 24, 25 stay with window 3
    assert owners == [0] * 8 + [1] * 6 + [2] * 6 + [3] * 6 + [4] * 4


def test_sentence_rows_from_python_inputs():
    from finetune_kit.alignment import sentence_rows
    from finetune_kit.task import TaskError

    rows = sentence_rows(["New  York", ("a", "b"), {"tokens": ["x"], "tags": ["O"]}], "tokens", "span-ner")
    assert rows == [{"tokens": ["New", "York"]}, {"tokens": ["a", "b"]}, {"tokens": ["x"], "tags": ["O"]}]
    with pytest.raises(TaskError, match="span-ner predicts from token lists, strings or dicts, not 3"):
        sentence_rows([3], "tokens", "span-ner")
