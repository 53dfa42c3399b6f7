"""Contextual embeddings (``finetune_kit.embed`` and ``finetune-kit embed``) against vectors
computed by hand from the encoder's ``output_hidden_states``, one text at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast
from typer.testing import CliRunner

import finetune_kit
from finetune_kit.cli import app
from finetune_kit.embeddings import EmbeddingError, embed
from finetune_kit.task import DataError
from tests.conftest import FIXTURES

ATOL = 1e-5
runner = CliRunner()

# Single-token words of the fixture vocabulary, and words it splits into letters ("zebra" ->
# z ##e ##b ##r ##a), so that words of several subwords are in the inputs.
TEXTS = [
    "the zebra sat on the mat",
    "hello",
    "the cat sat , and the dog ran in the big park with my quokka after the long night",
    "a blue zebra !",
]


@pytest.fixture(scope="module")
def deep_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A five-layer version of the tiny BERT (``last4`` needs four layers)."""
    directory = tmp_path_factory.mktemp("deep-bert")
    tokenizer = BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=5,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(1)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


class Hand:
    """The model run on one text at a time, no padding, every hidden state kept."""

    def __init__(self, directory: str) -> None:
        self.tokenizer = BertTokenizerFast.from_pretrained(directory)
        self.model = BertModel.from_pretrained(directory).eval()

    def states(self, text: str | None = None, ids: list[int] | None = None) -> tuple[list[str], list[np.ndarray]]:
        """The tokens of ``text`` (with [CLS] and [SEP]) and each hidden state, (tokens, hidden)."""
        if ids is None:
            ids = self.tokenizer(text)["input_ids"]
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        return self.tokenizer.convert_ids_to_tokens(ids), [h[0].numpy() for h in out.hidden_states]

    def layer(self, text: str, layer: int | str) -> tuple[list[str], np.ndarray]:
        tokens, states = self.states(text)
        if layer == "last":
            return tokens, states[-1]
        if layer == "last4":
            return tokens, (states[-1] + states[-2] + states[-3] + states[-4]) / 4
        return tokens, states[layer]


def words_by_hand(tokens: list[str]) -> list[list[int]]:
    """Positions of each word's subwords among the content tokens: a '##' token continues a word."""
    words: list[list[int]] = []
    for position, token in enumerate(tokens):
        if token.startswith("##"):
            words[-1].append(position)
        else:
            words.append([position])
    return words


@pytest.fixture(scope="module")
def hand(deep_encoder: str) -> Hand:
    return Hand(deep_encoder)


@pytest.fixture(scope="module")
def tiny_hand(tiny_encoder: str) -> Hand:
    return Hand(tiny_encoder)


# ------------------------------------------------------------------------ layers and pooling


@pytest.mark.parametrize("layer", ["last", 2, -3, 0, "last4"])
def test_token_and_text_vectors_match_hand_computation(deep_encoder: str, hand: Hand, layer: int | str) -> None:
    tokens = embed(deep_encoder, TEXTS, level="token", layer=layer, batch_size=3, progress=False)
    means = embed(deep_encoder, TEXTS, level="text", text_pooling="mean", layer=layer, batch_size=3, progress=False)
    cls = embed(deep_encoder, TEXTS, level="text", text_pooling="cls", layer=layer, batch_size=3, progress=False)
    assert means.shape == cls.shape == (len(TEXTS), 32) and means.dtype == np.float32
    for k, text in enumerate(TEXTS):
        names, states = hand.layer(text, layer)
        assert names[0] == "[CLS]" and names[-1] == "[SEP]"
        content = states[1:-1]  # special tokens left out
        assert tokens[k].dtype == np.float32
        np.testing.assert_allclose(tokens[k], content, atol=ATOL)
        np.testing.assert_allclose(means[k], content.mean(axis=0), atol=ATOL)
        np.testing.assert_allclose(cls[k], states[0], atol=ATOL)


def test_layers_differ(deep_encoder: str) -> None:
    """The layer setting is not ignored: each choice gives other vectors."""
    vectors = [embed(deep_encoder, TEXTS[:1], layer=layer, progress=False) for layer in ("last", -2, 0, "last4")]
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            assert not np.allclose(vectors[i], vectors[j], atol=1e-3)
    np.testing.assert_allclose(vectors[0], embed(deep_encoder, TEXTS[:1], layer=5, progress=False), atol=ATOL)


@pytest.mark.parametrize("layer", ["last", 1, "last4"])
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_word_vectors_match_hand_computation(deep_encoder: str, hand: Hand, layer: int | str, pooling: str) -> None:
    vectors = embed(deep_encoder, TEXTS, level="word", word_pooling=pooling, layer=layer, progress=False)
    for k, text in enumerate(TEXTS):
        names, states = hand.layer(text, layer)
        words = words_by_hand(names[1:-1])
        content = states[1:-1]
        expected = [content[w[0]] if pooling == "first" else content[w].mean(axis=0) for w in words]
        assert vectors[k].shape == (len(words), 32)
        np.testing.assert_allclose(vectors[k], np.stack(expected), atol=ATOL)
    zebra = words_by_hand(hand.layer(TEXTS[0], "last")[0][1:-1])[1]
    assert len(zebra) == 5  # the test reads a word of several subwords


def test_pre_tokenized_words(tiny_encoder: str, tiny_hand: Hand, tmp_path: Path) -> None:
    """A JSON Lines list of words keeps those words, even one the tokenizer splits further."""
    path = tmp_path / "words.jsonl"
    rows = [{"id": 1, "words": ["the", "zebra", "sat"]}, {"words": ["hello", "world"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "w.jsonl"
    vectors = embed(tiny_encoder, input=path, output=out, level="word", word_pooling="mean",
                    text_column="words", progress=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for k, row in enumerate(rows):
        names, states = tiny_hand.layer(" ".join(row["words"]), "last")
        words = words_by_hand(names[1:-1])
        assert len(words) == len(row["words"])
        expected = np.stack([states[1:-1][w].mean(axis=0) for w in words])
        np.testing.assert_allclose(vectors[k], expected, atol=ATOL)
        assert records[k]["line"] == k + 1 and records[k]["words"] == row["words"]
        np.testing.assert_allclose(np.asarray(records[k]["embeddings"], dtype=np.float32), expected, atol=ATOL)


def test_loaded_encoder_and_tokenizer(tiny_encoder: str, tiny_hand: Hand) -> None:
    vectors = finetune_kit.embed((tiny_hand.model, tiny_hand.tokenizer), ["hello world"], text_pooling="cls",
                                 progress=False)
    np.testing.assert_allclose(vectors[0], tiny_hand.layer("hello world", "last")[1][0], atol=ATOL)


# ------------------------------------------------------------------------------------ windows

# 14 single-token words: the window holds 8 - 2 specials = 6 tokens and two windows share 2,
# so the windows are tokens [0, 6), [4, 10) and [8, 14). A token's context in a window is the
# smaller count of tokens on its two sides there; it is read where that is largest, ties to the
# earlier window: token 4 has 1 in the first window and 0 in the second, token 5 has 0 and 1.
LONG = "the cat sat on the mat and the dog ran in the big park"
WINDOWS = [(0, 6), (4, 10), (8, 14)]
OWNER = [0] * 5 + [1] * 4 + [2] * 5


def test_long_text_tokens_come_from_their_best_window(tiny_encoder: str, tiny_hand: Hand) -> None:
    tok = tiny_hand.tokenizer
    ids = tok(LONG, add_special_tokens=False)["input_ids"]
    assert len(ids) == 14
    window_states = [tiny_hand.states(ids=[tok.cls_token_id, *ids[s:e], tok.sep_token_id])[1][-1]
                     for s, e in WINDOWS]
    expected = np.stack([window_states[w][1 + p - WINDOWS[w][0]] for p, w in enumerate(OWNER)])

    tokens = embed(tiny_encoder, [LONG, "hello"], level="token", max_length=8, stride=2, progress=False)
    assert tokens[0].shape == (14, 32)  # no token lost or counted twice
    np.testing.assert_allclose(tokens[0], expected, atol=ATOL)
    whole = tiny_hand.layer(LONG, "last")[1][1:-1]
    assert not np.allclose(tokens[0], whole, atol=1e-3)  # the windows were really used

    mean = embed(tiny_encoder, [LONG], max_length=8, stride=2, progress=False)
    np.testing.assert_allclose(mean[0], expected.mean(axis=0), atol=ATOL)
    cls = embed(tiny_encoder, [LONG], text_pooling="cls", max_length=8, stride=2, progress=False)
    np.testing.assert_allclose(cls[0], np.mean([s[0] for s in window_states], axis=0), atol=ATOL)


def test_text_that_fits_is_read_whole(tiny_encoder: str, tiny_hand: Hand) -> None:
    tokens = embed(tiny_encoder, [LONG], level="token", max_length=16, stride=3, progress=False)
    np.testing.assert_allclose(tokens[0], tiny_hand.layer(LONG, "last")[1][1:-1], atol=ATOL)


def test_word_split_across_windows(tiny_encoder: str, tiny_hand: Hand) -> None:
    """Every subword of a long text is read once, whatever window its word falls in."""
    text = "zebra quokka the cat sat on the mat"
    tok = tiny_hand.tokenizer
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    tokens = embed(tiny_encoder, [text], level="token", max_length=6, stride=1, progress=False)
    words = embed(tiny_encoder, [text], level="word", max_length=6, stride=1, progress=False)
    assert tokens[0].shape == (n, 32) and words[0].shape == (8, 32)
    firsts = [w[0] for w in words_by_hand(tok.tokenize(text))]
    np.testing.assert_allclose(words[0], tokens[0][firsts], atol=ATOL)


# ------------------------------------------------------------------------------------ outputs

LINES = [
    "the cat sat on the mat and the dog ran in the big park with the zebra",
    "hello",
    "",
    "a blue zebra ! the end",
    "the dog",
]


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def _expected_means(hand: Hand) -> np.ndarray:
    rows = []
    for line in LINES:
        states = hand.layer(line, "last")[1]
        rows.append(states[1:-1].mean(axis=0) if line else states.mean(axis=0))  # empty: [CLS] and [SEP]
    return np.stack(rows)


def test_npy_default_one_row_per_line_in_order(tiny_encoder: str, tiny_hand: Hand, tmp_path: Path) -> None:
    out = tmp_path / "emb.npy"
    returned = embed(tiny_encoder, input=_text_file(tmp_path), output=out, batch_size=2, progress=False)
    array = np.load(out)
    assert array.shape == (5, 32) and array.dtype == np.float32
    np.testing.assert_array_equal(array, returned)
    np.testing.assert_allclose(array, _expected_means(tiny_hand), atol=ATOL)
    index = [json.loads(line) for line in (tmp_path / "emb.index.jsonl").read_text().splitlines()]
    assert index == [{"line": k + 1, "start": k, "end": k + 1} for k in range(5)]


def test_safetensors_token_level_with_index(tiny_encoder: str, tiny_hand: Hand, tmp_path: Path) -> None:
    out = tmp_path / "tokens.safetensors"
    embed(tiny_encoder, input=_text_file(tmp_path), output=out, level="token", batch_size=2, progress=False)
    array = load_file(str(out))["embeddings"]
    index = [json.loads(line) for line in (tmp_path / "tokens.index.jsonl").read_text().splitlines()]
    assert [r["line"] for r in index] == [1, 2, 3, 4, 5]
    total = 0
    for record, line in zip(index, LINES):
        names, states = tiny_hand.layer(line, "last")
        assert record["tokens"] == names[1:-1]
        assert (record["start"], record["end"]) == (total, total + len(names) - 2)
        np.testing.assert_allclose(array[record["start"]:record["end"]], states[1:-1], atol=ATOL)
        total += len(names) - 2
    assert array.shape == (total, 32) and array.dtype == np.float32


def test_jsonl_output(tiny_encoder: str, tiny_hand: Hand, tmp_path: Path) -> None:
    out = tmp_path / "emb.jsonl"
    embed(tiny_encoder, input=_text_file(tmp_path), output=out, progress=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(np.array([r["embedding"] for r in records], dtype=np.float32),
                               _expected_means(tiny_hand), atol=ATOL)
    words = embed(tiny_encoder, input=_text_file(tmp_path), output=tmp_path / "w.jsonl", level="word",
                  progress=False)
    records = [json.loads(line) for line in (tmp_path / "w.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records[3]["words"] == ["a", "blue", "zebra", "!", "the", "end"] and records[2]["words"] == []
    for record, vectors in zip(records, words):
        np.testing.assert_array_equal(np.asarray(record["embeddings"], dtype=np.float32).reshape(-1, 32), vectors)


def test_cli_embed(tiny_encoder: str, tiny_hand: Hand, tmp_path: Path) -> None:
    out = tmp_path / "cli.npy"
    result = runner.invoke(app, ["embed", tiny_encoder, "--input", str(_text_file(tmp_path)), "--output", str(out),
                                 "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "5 text embeddings" in result.output and str(out) in result.output
    np.testing.assert_allclose(np.load(out), _expected_means(tiny_hand), atol=ATOL)

    out = tmp_path / "cli-tokens.npy"
    result = runner.invoke(app, ["embed", tiny_encoder, "--input", str(_text_file(tmp_path)), "--output", str(out),
                                 "--level", "token", "--layer", "-2", "--max-length", "8", "--stride", "2"])
    assert result.exit_code == 0, result.output
    index = [json.loads(line) for line in (tmp_path / "cli-tokens.index.jsonl").read_text().splitlines()]
    hello = index[1]
    assert hello["tokens"] == ["hello"]
    np.testing.assert_allclose(np.load(out)[hello["start"]], tiny_hand.layer("hello", -2)[1][1], atol=ATOL)
    assert np.load(out).shape[0] == sum(len(tiny_hand.tokenizer.tokenize(line)) for line in LINES)


# --------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("content", "line", "problem"), [
    ('{"text": "fine"}\n{"text": "broken"\n', 2, "not valid JSON"),
    ('{"text": "fine"}\n\n{"body": "no text column"}\n', 3, "no 'text' column"),
    ('{"text": 3}\n', 1, "not text or a list of words"),
    ('{"text": ["a", 2]}\n', 1, "word 2 is int"),
    ('["text"]\n', 1, "expected a JSON object"),
])
def test_bad_jsonl_names_file_and_line_and_writes_nothing(
    tiny_encoder: str, tmp_path: Path, content: str, line: int, problem: str,
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "out.npy"
    with pytest.raises(DataError) as info:
        embed(tiny_encoder, input=path, output=out, progress=False)
    message = str(info.value)
    assert message.startswith(f"{path} line {line}: ") and problem in message and "\n" not in message
    assert list(tmp_path.iterdir()) == [path]

    result = runner.invoke(app, ["embed", tiny_encoder, "--input", str(path), "--output", str(out)])
    assert result.exit_code == 2
    assert f"error: {path} line {line}: " in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [path]


def test_missing_file_and_bad_settings(tiny_encoder: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        embed(tiny_encoder, input=tmp_path / "nope.txt", output=tmp_path / "o.npy")
    texts = _text_file(tmp_path)
    bad = [
        {"level": "sentence"}, {"text_pooling": "max"}, {"word_pooling": "last"}, {"layer": "top"},
        {"layer": 3}, {"layer": -4}, {"layer": "last4"}, {"max_length": 2}, {"max_length": 300},
        {"max_length": 8, "stride": 6}, {"output": tmp_path / "o.csv"}, {"batch_size": 0},
    ]
    for settings in bad:
        settings = {"output": tmp_path / "o.npy", **settings}
        with pytest.raises(EmbeddingError):
            embed(tiny_encoder, input=texts, progress=False, **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]
    result = runner.invoke(app, ["embed", tiny_encoder, "--input", str(texts), "--output", str(tmp_path / "o.npy"),
                                 "--layer", "last4"])
    assert result.exit_code == 2 and "error: layer: last4" in result.output


def test_plain_text_lines(tmp_path: Path) -> None:
    """Every line is one input, an empty one included; CRLF endings and no final newline read the same."""
    from finetune_kit.embeddings import read_inputs

    path = tmp_path / "crlf.txt"
    path.write_bytes(b"first\r\n\r\n  \r\nlast")
    assert read_inputs(path) == [(1, "first"), (2, ""), (3, "  "), (4, "last")]
    path.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"crlf.txt line 2 \(byte offset 3\): not valid UTF-8 \(0xff\)"):
        read_inputs(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="no texts"):
        read_inputs(path)


@pytest.mark.parametrize(("name", "head", "offset"), [
    ("in.txt", b"good movie\nbad movie\n", 21 + 3),  # 11 + 10 bytes before line 3, then "caf"
    ("in.jsonl", b'{"text": "a"}\n{"text": "b"}\n', 28 + 13),  # 14 + 14, then '{"text": "caf'
])
@pytest.mark.parametrize("bad", ["latin-1", "binary"])
def test_input_that_is_not_utf8_is_a_one_line_error(tiny_encoder: str, tmp_path: Path, name: str, head: bytes,
                                                    offset: int, bad: str) -> None:
    path = tmp_path / name
    if bad == "latin-1":
        line3, byte = (b'{"text": "caf\xe9"}\n' if name.endswith(".jsonl") else b"caf\xe9\n"), "0xe9"
    else:
        line3, byte = b"\xfe" + bytes(range(256)), "0xfe"
        offset = len(head)  # the first byte of line 3
    path.write_bytes(head + line3)
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["embed", tiny_encoder, "--input", str(path), "--output", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (f"error: {path} line 3 (byte offset {offset}): not valid UTF-8 ({byte}); re-encode the file as UTF-8"
            in result.output)
    assert list(tmp_path.iterdir()) == [path]
