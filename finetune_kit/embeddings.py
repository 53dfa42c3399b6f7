"""Contextual embeddings from an encoder: one vector per subword token, per word or per text.

Inputs are texts (plain text, one per line) or pre-tokenized word lists (JSON Lines). Every
input is tokenized without special tokens; the model reads it with its special tokens around it
([CLS] ... [SEP] for BERT). Vectors are read from one layer's output or the mean of the last
four (``layer``), in float32.

- ``token``: one vector per subword token of the text; special tokens are left out.
- ``word``: one vector per word, from its subwords (``first`` or ``mean``). Words are the fast
  tokenizer's pre-tokenized words (``word_ids()``: for BERT, punctuation marks are words of
  their own), or the given words of a pre-tokenized input (a word the tokenizer turns into no
  subword reads the unknown token, so that no word is lost).
- ``text``: ``mean`` (default) is the mean of the text's subword token vectors, every token
  counted once and the special tokens left out, so it equals the mean of the ``token`` level's
  vectors; an empty text has no token and takes the mean of its special tokens' vectors.
  Mean pooling is the default because it is how sentence-embedding encoders are trained (the
  packaged all-MiniLM-L6-v2 among them) and, for an encoder trained on nothing sentence-level,
  it is the better text vector than [CLS]. ``cls`` is the vector of the first special token.

A text longer than ``max_length`` (special tokens included) is cut into overlapping windows of
subword tokens, ``stride`` tokens shared by two consecutive windows; each token's vector comes
from the window where it has the most context (the larger of the two smaller sides, ties to the
earlier window), so every token is counted once. ``cls`` over several windows is the mean of
the windows' [CLS] vectors.

Windows are batched by length (longest first) and the results put back in input order.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .alignment import best_windows, plan_windows, special_tokens_around, word_pieces
from .data import LINE_COLUMN, not_utf8, read_jsonl_rows
from .files import atomic_write_bytes, atomic_write_text
from .modeling import position_limit
from .task import DataError

LEVELS = ("token", "word", "text")
WORD_POOLINGS = ("first", "mean")
TEXT_POOLINGS = ("mean", "cls")
LAYER_NAMES = ("last", "last4")
OUTPUT_SUFFIXES = (".npy", ".safetensors", ".jsonl")
DEFAULT_MAX_LENGTH = 512
ARRAY_KEY = "embeddings"  # the tensor's name in a .safetensors output
_TOKENIZE_CHUNK = 1024


class EmbeddingError(ValueError):
    """Embedding settings that cannot be used (unknown level, layer out of range, ...)."""


@dataclass
class _Item:
    """One input, tokenized: its content subword ids and their words."""

    line: int  # the line in the input file; for texts given in Python, the 1-based position
    ids: list[int]
    word_of: list[int | None]  # word number of each subword (None: part of no word)
    words: list[str]
    windows: list[tuple[int, int]] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)


def index_path(output: str | Path) -> Path:
    """The index written beside a ``.npy`` or ``.safetensors`` output: ``X.index.jsonl``."""
    return Path(output).with_suffix(".index.jsonl")


def output_paths(output: str | Path) -> list[Path]:
    """Every file ``embed`` writes for ``output``."""
    output = Path(output)
    return [output] if output.suffix.lower() == ".jsonl" else [output, index_path(output)]


# ---------------------------------------------------------------------------------- settings


def parse_layer(layer: int | str) -> int | str:
    """``last``, ``last4``, or a hidden-states index (an int, or its text from the command line)."""
    if isinstance(layer, bool):
        raise EmbeddingError(f"layer: {layer!r} is not allowed; give last, last4 or a layer number")
    if isinstance(layer, int):
        return layer
    text = str(layer).strip().lower()
    if text in LAYER_NAMES:
        return text
    try:
        return int(text)
    except ValueError:
        raise EmbeddingError(f"layer: '{layer}' is not allowed; give last, last4 or a layer number "
                             f"(0: the embedding layer's output, k: layer k's, -1: the last)") from None


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise EmbeddingError(f"{name}: '{value}' is not allowed; choose {', '.join(choices)}")
    return value


def _check_output(output: str | Path | None, input: str | Path | None) -> Path | None:
    if output is None:
        return None
    output = Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise EmbeddingError(f"{output}: cannot tell the output format from the extension '{output.suffix}'; "
                             f"use {', '.join(OUTPUT_SUFFIXES)}")
    if input is not None:
        source = Path(input).resolve()
        for path in output_paths(output):
            if path.resolve() == source:
                raise EmbeddingError(f"{path}: is the input file; write the embeddings elsewhere")
    return output


# ------------------------------------------------------------------------------------- input


def _check_value(value: Any, where: str, column: str | None) -> str | list[str]:
    what = f"'{column}'" if column is not None else "the value"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        for k, word in enumerate(value):
            if not isinstance(word, str):
                raise DataError(f"{where}: {what} word {k + 1} is {type(word).__name__}, not text")
        return list(value)
    raise DataError(f"{where}: {what} is {type(value).__name__}, not text or a list of words")


def read_inputs(path: str | Path, text_column: str = "text") -> list[tuple[int, str | list[str]]]:
    """``(line number, text or word list)`` for every input of a file.

    A ``.jsonl`` file holds one JSON object per line (blank lines are skipped), the text in
    ``text_column``: a string, or a list of words (pre-tokenized). Any other file is plain text,
    one text per line, an empty line included, so that the outputs match the lines.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".jsonl":
        inputs = []
        for row in read_jsonl_rows(path):
            number = row[LINE_COLUMN]
            if text_column not in row:
                found = ", ".join(k for k in row if k != LINE_COLUMN) or "none"
                raise DataError(f"{path} line {number}: no '{text_column}' column (found: {found}); "
                                f"set the text column (text_column, --text-column)")
            inputs.append((number, _check_value(row[text_column], f"{path} line {number}", text_column)))
    else:
        inputs = _plain_lines(path)
    if not inputs:
        raise DataError(f"{path}: no texts in the file")
    return inputs


def _plain_lines(path: Path) -> list[tuple[int, str]]:
    """Every line of a plain text file, an empty one included (the final newline starts none)."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    inputs = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        inputs.append((number, text.removesuffix("\r")))
    return inputs


def _python_inputs(texts: Iterable[Any]) -> list[tuple[int, str | list[str]]]:
    if isinstance(texts, (str, bytes)):
        raise DataError("texts: give a list of texts (or of word lists), not a single string")
    return [(k + 1, _check_value(t, f"texts[{k}]", None)) for k, t in enumerate(texts)]


def _tokenize(tokenizer: Any, inputs: Sequence[tuple[int, str | list[str]]]) -> list[_Item]:
    items: list[_Item | None] = [None] * len(inputs)
    plain = [k for k, (_, value) in enumerate(inputs) if isinstance(value, str)]
    split = [k for k, (_, value) in enumerate(inputs) if not isinstance(value, str)]
    for lo in range(0, len(plain), _TOKENIZE_CHUNK):
        chunk = plain[lo : lo + _TOKENIZE_CHUNK]
        texts = [inputs[k][1] for k in chunk]
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
        for j, k in enumerate(chunk):
            text, offsets = texts[j], encoded["offset_mapping"][j]
            numbers: dict[int, int] = {}
            spans: list[list[int]] = []
            word_of: list[int | None] = []
            for (start, end), word in zip(offsets, encoded.word_ids(j)):
                if word is None:
                    word_of.append(None)
                    continue
                if word not in numbers:
                    numbers[word] = len(spans)
                    spans.append([start, end])
                span = spans[numbers[word]]
                span[0], span[1] = min(span[0], start), max(span[1], end)
                word_of.append(numbers[word])
            items[k] = _Item(inputs[k][0], list(encoded["input_ids"][j]), word_of, [text[s:e] for s, e in spans])
    for lo in range(0, len(split), _TOKENIZE_CHUNK):
        chunk = split[lo : lo + _TOKENIZE_CHUNK]
        sentences = [inputs[k][1] for k in chunk]
        for k, words, pieces in zip(chunk, sentences, word_pieces(tokenizer, sentences)):
            ids = [i for p in pieces for i in p]
            word_of = [w for w, p in enumerate(pieces) for _ in p]
            items[k] = _Item(inputs[k][0], ids, word_of, list(words))
    return items  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- model


def _model_limit(encoder: Any, tokenizer: Any) -> int | None:
    limits = []
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limits.append(tokenizer_max)
    positions = position_limit(getattr(encoder, "config", None))
    if positions is not None:
        limits.append(positions)
    return min(limits) if limits else None


def _load(model: Any, trust_remote_code: bool, device: str | None) -> tuple[Any, Any]:
    if isinstance(model, (tuple, list)) and len(model) == 2:
        encoder, tokenizer = model
        if device is not None:
            encoder.to(device)
    else:
        import torch

        from .modeling import load_tokenizer
        from .saved_models import load_encoder

        name = str(model)
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        encoder = load_encoder(name, trust_remote_code=trust_remote_code)
        encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not getattr(tokenizer, "is_fast", False):
        raise EmbeddingError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; "
                             "embeddings need one for its word boundaries")
    return encoder, tokenizer


def _select(outputs: Any, layer: int | str) -> Any:
    if layer == "last":
        return outputs.last_hidden_state
    states = outputs.hidden_states
    if layer == "last4":
        if len(states) < 5:
            raise EmbeddingError(f"layer: last4 needs at least four layers; the model has {len(states) - 1}")
        import torch

        return torch.stack([s.float() for s in states[-4:]]).mean(dim=0)
    if not -len(states) <= layer < len(states):
        raise EmbeddingError(f"layer: {layer} is out of range; the model has {len(states) - 1} layers "
                             f"(0 is the embedding layer's output, {len(states) - 1} or -1 the last layer's)")
    return states[layer]


def _word_vectors(tokens: np.ndarray, word_of: Sequence[int | None], num_words: int, pooling: str) -> np.ndarray:
    if pooling == "first":
        first = [-1] * num_words
        for position, word in enumerate(word_of):
            if word is not None and first[word] < 0:
                first[word] = position
        return tokens[first] if num_words else tokens[:0]
    positions = [p for p, w in enumerate(word_of) if w is not None]
    words = np.asarray([word_of[p] for p in positions], dtype=np.int64)
    sums = np.zeros((num_words, tokens.shape[1]), dtype=np.float64)
    np.add.at(sums, words, tokens[positions])
    counts = np.bincount(words, minlength=num_words)
    return (sums / counts[:, None]).astype(np.float32)


@dataclass
class Embedded:
    """What ``compute`` returns: one float32 array per input (text level: one row), the
    tokens or words the rows stand for (token and word level), and the inputs' line numbers."""

    vectors: list[np.ndarray]
    labels: list[list[str]] | None
    lines: list[int]
    level: str
    hidden_size: int

    @property
    def array(self) -> np.ndarray:
        """Every row of every input, in input order: shape (rows, hidden)."""
        if not self.vectors:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        return np.concatenate(self.vectors, axis=0).astype(np.float32, copy=False)


def compute(
    encoder: Any, tokenizer: Any, inputs: Sequence[tuple[int, str | list[str]]], *, level: str = "text",
    word_pooling: str = "first", text_pooling: str = "mean", layer: int | str = "last", batch_size: int = 32,
    max_length: int | None = None, stride: int | None = None, progress: bool = True,
) -> Embedded:
    """Embed ``(line, text or words)`` inputs with a loaded encoder and fast tokenizer."""
    import torch
    from tqdm.auto import tqdm

    _check_choice("level", level, LEVELS)
    _check_choice("word_pooling", word_pooling, WORD_POOLINGS)
    _check_choice("text_pooling", text_pooling, TEXT_POOLINGS)
    layer = parse_layer(layer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EmbeddingError(f"batch_size: {batch_size!r} is not allowed; give a whole number >= 1")

    prefix, suffix = special_tokens_around(tokenizer)
    if level == "text" and text_pooling == "cls" and not prefix:
        raise EmbeddingError(f"text_pooling: cls needs a special token before the text, and "
                             f"{type(tokenizer).__name__} puts none; use mean")
    limit = _model_limit(encoder, tokenizer)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH
    elif isinstance(max_length, bool) or not isinstance(max_length, int):
        raise EmbeddingError(f"max_length: {max_length!r} is not allowed; give a whole number")
    elif limit is not None and max_length > limit:
        raise EmbeddingError(f"max_length: {max_length} is more than the model reads ({limit} tokens)")
    capacity = max_length - len(prefix) - len(suffix)
    if capacity < 1:
        raise EmbeddingError(f"max_length: {max_length} leaves no room for text beside the "
                             f"{len(prefix) + len(suffix)} special tokens")
    if stride is None:
        stride = capacity // 4
    elif isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise EmbeddingError(f"stride: {stride!r} is not allowed; give a whole number >= 0")
    if stride >= capacity:
        raise EmbeddingError(f"stride: {stride} is not allowed; it must be smaller than the window "
                             f"({capacity} tokens: max_length minus the special tokens)")
    num_layers = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    if isinstance(num_layers, int):
        if layer == "last4" and num_layers < 4:
            raise EmbeddingError(f"layer: last4 needs at least four layers; the model has {num_layers}")
        if isinstance(layer, int) and not -(num_layers + 1) <= layer <= num_layers:
            raise EmbeddingError(f"layer: {layer} is out of range; the model has {num_layers} layers "
                                 f"(0 is the embedding layer's output, {num_layers} or -1 the last layer's)")

    items = _tokenize(tokenizer, inputs)
    features: list[tuple[int, int]] = []  # (item, window)
    for k, item in enumerate(items):
        ones = [1] * len(item.ids)
        item.windows = plan_windows(ones, capacity, stride)
        item.owners = best_windows(ones, item.windows, capacity)
        features.extend((k, w) for w in range(len(item.windows)))
    n_prefix, n_specials = len(prefix), len(prefix) + len(suffix)

    def length(feature: tuple[int, int]) -> int:
        start, end = items[feature[0]].windows[feature[1]]
        return end - start + n_specials

    features.sort(key=length, reverse=True)  # longest first: a batch too big fails at once
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(encoder.parameters()).device
    remaining = [len(item.windows) for item in items]
    partial: dict[int, np.ndarray] = {}  # token vectors (token/word level) or a running sum (text)
    vectors: list[np.ndarray | None] = [None] * len(items)

    def finish(k: int) -> None:
        item, acc = items[k], partial.pop(k)
        if level == "token":
            vectors[k] = acc
        elif level == "word":
            vectors[k] = _word_vectors(acc, item.word_of, len(item.words), word_pooling)
        elif text_pooling == "cls":
            vectors[k] = (acc / len(item.windows)).astype(np.float32)[None]
        elif item.ids:
            vectors[k] = (acc / len(item.ids)).astype(np.float32)[None]
        else:
            vectors[k] = (acc / n_specials).astype(np.float32)[None]

    was_training = encoder.training
    encoder.eval()
    try:
        bar = tqdm(total=len(features), desc="embedding", unit="window", disable=None if progress else True)
        for lo in range(0, len(features), batch_size):
            batch = features[lo : lo + batch_size]
            width = max(map(length, batch))
            ids = np.full((len(batch), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, (k, w) in enumerate(batch):
                start, end = items[k].windows[w]
                window = prefix + items[k].ids[start:end] + suffix
                ids[row, : len(window)] = window
                mask[row, : len(window)] = 1
            with torch.inference_mode():
                outputs = encoder(input_ids=torch.from_numpy(ids).to(device),
                                  attention_mask=torch.from_numpy(mask).to(device),
                                  output_hidden_states=layer != "last", return_dict=True)
                hidden = _select(outputs, layer).float().cpu().numpy()
            for row, (k, w) in enumerate(batch):
                item = items[k]
                start, end = item.windows[w]
                owned = [p for p in range(start, end) if item.owners[p] == w]
                columns = [n_prefix + p - start for p in owned]
                if level in ("token", "word"):
                    acc = partial.setdefault(k, np.empty((len(item.ids), hidden.shape[2]), dtype=np.float32))
                    acc[owned] = hidden[row, columns]
                else:
                    acc = partial.setdefault(k, np.zeros(hidden.shape[2], dtype=np.float64))
                    if text_pooling == "cls":
                        acc += hidden[row, 0]
                    elif item.ids:
                        acc += hidden[row, columns].sum(axis=0, dtype=np.float64)
                    else:  # an empty text: its special tokens are all the model saw
                        acc += hidden[row, :n_specials].sum(axis=0, dtype=np.float64)
                remaining[k] -= 1
                if remaining[k] == 0:
                    finish(k)
            bar.update(len(batch))
        bar.close()
    finally:
        encoder.train(was_training)

    labels = None
    if level == "token":
        labels = [tokenizer.convert_ids_to_tokens(item.ids) for item in items]
    elif level == "word":
        labels = [list(item.words) for item in items]
    hidden_size = getattr(getattr(encoder, "config", None), "hidden_size", 0)
    if vectors:
        hidden_size = int(vectors[0].shape[1])  # type: ignore[union-attr]
    return Embedded(vectors, labels, [item.line for item in items], level, hidden_size)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ output


def _json_vectors(rows: np.ndarray) -> str:
    if np.isfinite(rows).all():  # float32's shortest round-trip text
        return "[" + ",".join("[" + ",".join(row.astype(str)) + "]" for row in rows) + "]"
    return json.dumps(rows.tolist())


def write_output(output: str | Path, result: Embedded, metadata: dict[str, str] | None = None) -> list[Path]:
    """Write ``result`` to ``output`` (.npy or .safetensors with an index beside it, or .jsonl);
    every file is built in memory first and written atomically. Returns the paths written."""
    output = Path(output)
    suffix = output.suffix.lower()
    key = {"token": "tokens", "word": "words"}.get(result.level)
    records = []
    start = 0
    for k, (line, rows) in enumerate(zip(result.lines, result.vectors)):
        record: dict[str, Any] = {"line": line, "start": start, "end": start + len(rows)}
        if key is not None:
            record[key] = result.labels[k]  # type: ignore[index]
        records.append(record)
        start += len(rows)
    if suffix == ".jsonl":
        lines = []
        for record, rows in zip(records, result.vectors):
            head = {"line": record["line"]}
            if key is not None:
                head[key] = record[key]
            body = _json_vectors(rows[:1])[1:-1] if result.level == "text" else _json_vectors(rows)
            name = "embedding" if result.level == "text" else "embeddings"
            lines.append(json.dumps(head, ensure_ascii=False)[:-1] + f', "{name}": {body}}}\n')
        atomic_write_text(output, "".join(lines))
        return [output]
    array = result.array
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
    elif suffix == ".safetensors":
        from safetensors.numpy import save

        data = save({ARRAY_KEY: np.ascontiguousarray(array)}, metadata=metadata)
    else:
        raise EmbeddingError(f"{output}: cannot tell the output format from the extension '{output.suffix}'; "
                             f"use {', '.join(OUTPUT_SUFFIXES)}")
    index = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_bytes(output, data)
    atomic_write_text(index_path(output), index)
    return [output, index_path(output)]


# --------------------------------------------------------------------------------------- API


def embed(
    model: Any, texts: Iterable[str | Sequence[str]] | None = None, *, input: str | Path | None = None,
    output: str | Path | None = None, level: str = "text", word_pooling: str = "first",
    text_pooling: str = "mean", layer: int | str = "last", batch_size: int = 32, max_length: int | None = None,
    stride: int | None = None, text_column: str = "text", progress: bool = True, trust_remote_code: bool = False,
    device: str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Contextual embeddings of ``texts`` (strings, or word lists) or of the file ``input``.

    ``model``: a pretrained encoder (local directory or Hub id), a finetune-kit model directory,
    or an already loaded ``(encoder, tokenizer)``. Returns, in input order, a float32 array of
    shape (inputs, hidden) at the ``text`` level, else a list with one (tokens or words, hidden)
    array per input; ``output`` (.npy, .safetensors or .jsonl) also writes them. See the module
    documentation for the levels, pooling, layers and windows.
    """
    if (texts is None) == (input is None):
        raise EmbeddingError("give either texts or an input file, not both" if texts is not None
                             else "give texts or an input file")
    _check_choice("level", level, LEVELS)
    _check_choice("word_pooling", word_pooling, WORD_POOLINGS)
    _check_choice("text_pooling", text_pooling, TEXT_POOLINGS)
    parsed_layer = parse_layer(layer)
    output = _check_output(output, input)
    inputs = read_inputs(input, text_column) if input is not None else _python_inputs(texts)  # type: ignore[arg-type]
    encoder, tokenizer = _load(model, trust_remote_code, device)
    result = compute(encoder, tokenizer, inputs, level=level, word_pooling=word_pooling,
                     text_pooling=text_pooling, layer=parsed_layer, batch_size=batch_size,
                     max_length=max_length, stride=stride, progress=progress)
    if output is not None:
        pooling = word_pooling if level == "word" else text_pooling if level == "text" else "none"
        metadata = {"level": level, "pooling": pooling, "layer": str(parsed_layer),
                    "model": str(model) if isinstance(model, (str, Path)) else type(encoder).__name__}
        write_output(output, result, metadata)
    return result.array if level == "text" else result.vectors
