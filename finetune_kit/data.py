"""Readers: CSV, TSV, JSON Lines, JSON documents (SQuAD, arrays of objects), CoNLL columns
and hub datasets into ``datasets.Dataset``.

Files are parsed with the standard library so that every problem is reported with the file and
the line it is on; each row keeps its line number in the ``_line`` column for later errors
(an unknown label, say). TSV files are read without quote processing, as GLUE files need.
CoNLL files become one row per sentence (``tokens``, ``tags``...), and each row also keeps the
line of every token (``_token_lines``). A ``.json`` file is one JSON document: the SQuAD layout
becomes one row per question (``id``, ``title``, ``context``, ``question``, ``answers`` as
``{"text": [...], "answer_start": [...]}``, empty for unanswerable questions), an array becomes
one row per object (``_item`` numbers them for errors), and a file of several JSON values is
read as JSON Lines.

Files are UTF-8 (a byte-order mark is allowed): a byte that cannot be decoded is an error naming
its line and byte offset. In JSON data each column, and each place inside its lists and objects
(``spans[].start``), holds one kind of value, as the Arrow table needs; a value of another kind
is an error naming its line.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetDict

from .columns import column_values
from .hub import require_hub
from .task import DataError

LINE_COLUMN = "_line"
TOKEN_LINES_COLUMN = "_token_lines"
ITEM_COLUMN = "_item"
SQUAD_VERSION_COLUMN = "squad_version"
INTERNAL_COLUMNS = (LINE_COLUMN, TOKEN_LINES_COLUMN, ITEM_COLUMN)
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
               ".conll": "conll", ".bio": "conll", ".iob": "conll", ".iob1": "conll", ".iob2": "conll",
               ".bioes": "conll", ".bilou": "conll"}
DOCSTART = "-DOCSTART-"

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def detect_format(path: Path, file_format: str = "auto", fallback: str | None = None) -> str:
    """The format of ``path``: as given, else by extension, else ``fallback`` (the task's usual
    format, e.g. CoNLL columns for tagging, so that ``emerging.test.annotated`` reads)."""
    if file_format != "auto":
        return file_format
    fmt = _EXTENSIONS.get(path.suffix.lower(), fallback)
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension '{path.suffix}'; "
            f"use .csv, .tsv, .jsonl, .json or .conll, or set file_format (text: one text per line)"
        )
    return fmt


def read_file(path: str | Path, file_format: str = "auto", limit: int | None = None,
              fallback_format: str | None = None, column_names: list[str] | None = None) -> Dataset:
    """Read one data file; ``limit`` keeps only the first rows (sentences for CoNLL, questions
    for SQuAD). ``column_names`` names the columns of a CSV or TSV file without a header line
    (GoEmotions' TSV, say): its first line is then data."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = detect_format(path, file_format, fallback_format)
    if column_names and fmt not in ("csv", "tsv"):
        raise DataError(f"{path}: column_names names the columns of CSV and TSV files without a header; "
                        f"this file is read as {fmt}")
    if fmt in ("csv", "tsv"):
        reader = functools.partial(_read_delimited, column_names=column_names)
    else:
        reader = {"jsonl": _read_jsonl, "json": _read_json, "conll": _read_conll, "text": _read_text}[fmt]
    with utf8_errors_named(path):
        rows = reader(path, fmt, limit)
    if not rows:
        raise DataError(f"{path}: no examples in the file")
    if fmt in ("jsonl", "json"):
        _check_nested_kinds(path, rows)
    try:
        return Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # what the checks above do not foresee
        raise DataError(f"{path}: the values cannot be stored as a table ({exc})") from None


def _read_delimited(path: Path, fmt: str, limit: int | None,
                    column_names: list[str] | None = None) -> list[dict[str, Any]]:
    delimiter = "\t" if fmt == "tsv" else ","
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    rows: list[dict[str, Any]] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=fmt == "csv")
        line = 1  # where the record being read starts: a quoted field may run over several lines
        try:
            if column_names:
                header = list(column_names)
            else:
                header = next(reader, None)
                if header is None:
                    return []
                header = [h.strip() for h in header]
                _check_header(path, header)
                line = reader.line_num + 1
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    line = reader.line_num + 1
                    continue
                if len(record) != len(header):
                    raise DataError(
                        f"{path} line {line}: expected {len(header)} fields "
                        f"({', '.join(header)}), found {len(record)}"
                    )
                row: dict[str, Any] = dict(zip(header, record))
                row[LINE_COLUMN] = line
                rows.append(row)
                line = reader.line_num + 1
                if limit is not None and len(rows) >= limit:
                    break
        except csv.Error as exc:
            unclosed = "; a quote opened in this record is never closed" if reader.line_num > line else ""
            raise DataError(f"{path} line {line}: malformed {fmt.upper()} ({exc}){unclosed}") from None
    return rows


def _check_header(path: Path, header: list[str]) -> None:
    if any(not h for h in header):
        raise DataError(f"{path} line 1: the header has an empty column name")
    seen = set()
    for h in header:
        if h in seen:
            raise DataError(f"{path} line 1: the header names column '{h}' twice")
        seen.add(h)


def _read_jsonl(path: Path, fmt: str, limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    kinds: dict[str, tuple[str, int]] = {}
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number}: expected a JSON object, found {type(row).__name__}")
            _check_value_kinds(path, number, row, kinds)
            row[LINE_COLUMN] = number
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file as dicts, each with its line number (``LINE_COLUMN``);
    a malformed line is an error naming it."""
    with utf8_errors_named(Path(path)):
        return _read_jsonl(Path(path), "jsonl", None)


def _read_text(path: Path, fmt: str, limit: int | None) -> list[dict[str, Any]]:
    """Plain text: one row per non-blank line (a document or a sentence), in column ``text``."""
    rows: list[dict[str, Any]] = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            rows.append({"text": text, LINE_COLUMN: number})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _read_json(path: Path, fmt: str, limit: int | None) -> list[dict[str, Any]]:
    """One JSON document: SQuAD, an array of objects, or one object; else JSON Lines."""
    with _open_text(path) as handle:
        text = handle.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON values: JSON Lines under a .json name
            return _read_jsonl(path, "jsonl", limit)
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return _squad_rows(path, document["data"], limit, document.get("version"))
    items = document if isinstance(document, list) else [document]
    rows: list[dict[str, Any]] = []
    kinds: dict[str, tuple[str, int]] = {}
    for number, item in enumerate(items[:limit] if limit is not None else items, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{path} item {number}: expected a JSON object, found {type(item).__name__}")
        _check_value_kinds(path, number, item, kinds, unit="item")
        rows.append({**item, ITEM_COLUMN: number})
    return rows


def _squad_rows(path: Path, articles: list[Any], limit: int | None, version: Any = None) -> list[dict[str, Any]]:
    """SQuAD v1.1/v2.0 ``data[].paragraphs[].qas[]`` -> one row per question, with the file's
    ``version`` (when it states one) in ``squad_version``: the official scoring rules differ.

    ``is_impossible`` (v2.0) must agree with the answers: an unanswerable question has
    ``"answers": []`` (its plausible answers go in ``plausible_answers``), an answerable one has
    some; a file where they disagree is refused rather than guessed at."""
    rows: list[dict[str, Any]] = []
    stated = {SQUAD_VERSION_COLUMN: str(version)} if version is not None else {}

    def need(value: Any, kind: type, where: str, key: str) -> Any:
        if not isinstance(value, kind) or (kind is str and not value.strip()):
            raise DataError(f"{path}: {where}: '{key}' is missing or not {'text' if kind is str else 'a list'}")
        return value

    def need_object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise DataError(f"{path}: {where}: expected a JSON object, found {type(value).__name__}")
        return value

    for a, article in enumerate(articles):
        paragraphs = need(article.get("paragraphs") if isinstance(article, dict) else None, list, f"data[{a}]",
                          "paragraphs")
        for p, paragraph in enumerate(paragraphs):
            here = f"data[{a}].paragraphs[{p}]"
            context = need(need_object(paragraph, here).get("context"), str, here, "context")
            for q, qa in enumerate(need(paragraph.get("qas"), list, here, "qas")):
                where = f"{here}.qas[{q}]"
                need_object(qa, where)
                question = need(qa.get("question"), str, where, "question")
                question_id = str(qa.get("id", f"{a}-{p}-{q}"))
                answers = need(qa.get("answers", []), list, where, "answers")
                _check_impossible(path, f"{where} (question {question_id})", qa.get("is_impossible"), answers)
                texts, starts = [], []
                for k, answer in enumerate(answers):
                    if not (isinstance(answer, dict) and isinstance(answer.get("text"), str)
                            and isinstance(answer.get("answer_start"), int)):
                        raise DataError(f"{path}: {where}.answers[{k}]: expected {{\"text\": ..., "
                                        f"\"answer_start\": <int>}}")
                    texts.append(answer["text"])
                    starts.append(answer["answer_start"])
                rows.append({"id": question_id, "title": str(article.get("title", "")),
                             "context": context, "question": question,
                             "answers": {"text": texts, "answer_start": starts}, **stated, ITEM_COLUMN: len(rows) + 1})
                if limit is not None and len(rows) >= limit:
                    return rows
    return rows


def _check_impossible(path: Path, where: str, impossible: Any, answers: list[Any]) -> None:
    """A SQuAD v2.0 question's ``is_impossible`` (absent in v1.1) agrees with its answers."""
    if impossible is None:
        return
    if not isinstance(impossible, bool):
        raise DataError(f"{path}: {where}: is_impossible is {impossible!r}; give true or false")
    if impossible and answers:
        raise DataError(f"{path}: {where}: is_impossible is true but it has {len(answers)} answer(s); "
                        f"give it \"answers\": [] (plausible answers go in \"plausible_answers\") "
                        f"or set is_impossible to false")
    if not impossible and not answers:
        raise DataError(f"{path}: {where}: is_impossible is false but it has no answers; "
                        f"give its answers or set is_impossible to true")


def _read_conll(path: Path, fmt: str, limit: int | None) -> list[dict[str, Any]]:
    """CoNLL columns: a token per line, blank lines between sentences, ``-DOCSTART-`` skipped.

    Columns are separated by tabs (or by spaces on a line without a tab), so a token may hold
    other white space. Column 0 is ``tokens``; the last column is ``tags``; columns in between
    are ``column_1``, ``column_2``... (CoNLL-2003's POS tags are ``column_1``). Every token line
    of a file must have the same number of columns.
    """
    rows: list[dict[str, Any]] = []
    width: tuple[int, int] | None = None  # (columns, line where that was set)
    sentence: list[tuple[int, list[str]]] = []

    def close() -> None:
        if not sentence:
            return
        columns = list(zip(*(cells for _, cells in sentence)))
        row: dict[str, Any] = {"tokens": list(columns[0])}
        for i, values in enumerate(columns[1:], start=1):
            row["tags" if i == len(columns) - 1 else f"column_{i}"] = list(values)
        row[LINE_COLUMN] = sentence[0][0]
        row[TOKEN_LINES_COLUMN] = [number for number, _ in sentence]
        rows.append(row)
        sentence.clear()

    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            line = text.rstrip("\r\n").rstrip(" \t")
            if not line.strip(" \t"):
                close()
                if limit is not None and len(rows) >= limit:
                    return rows
                continue
            cells = line.split("\t") if "\t" in line else re.split(" +", line.lstrip(" "))
            if cells[0] == DOCSTART:
                close()
                continue
            if width is None:
                width = (len(cells), number)
            if len(cells) != width[0]:
                what = "a token with no tag" if len(cells) == 1 else f"{len(cells)} columns"
                raise DataError(f"{path} line {number}: {what}, but line {width[1]} has {width[0]} columns; "
                                f"every token line needs the same columns")
            if any(not cell.strip() for cell in cells):
                raise DataError(f"{path} line {number}: empty column {1 + [not c.strip() for c in cells].index(True)}")
            sentence.append((number, cells))
    close()
    return rows[:limit] if limit is not None else rows


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _check_value_kinds(
    path: Path, line: int, row: dict[str, Any], kinds: dict[str, tuple[str, int]], unit: str = "line"
) -> None:
    """A JSON column must hold one kind of value (Arrow needs it; mixing is a data error)."""
    for column, value in row.items():
        kind = _kind(value)
        if kind is None:
            continue
        first = kinds.setdefault(column, (kind, line))
        if first[0] != kind:
            raise DataError(
                f"{path} {unit} {line}: column '{column}' holds {kind}, but {unit} {first[1]} holds {first[0]}; "
                f"a column must hold one kind of value"
            )


def _nested_kind(value: Any) -> str:
    """The kind of a value inside a list or object; whole and decimal numbers differ here, since
    Arrow would turn every whole number of the column into a decimal one."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _nested_values(value: Any, pattern: str, place: str) -> Iterator[tuple[str, str, Any]]:
    """``(pattern, place, value)`` of every value inside a list or an object, at any depth:
    ``("spans[].start", "spans[2].start", 7)``. Nulls are left out (Arrow stores them anywhere)."""
    if isinstance(value, list):
        items = ((f"{pattern}[]", f"{place}[{k}]", item) for k, item in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{pattern}.{key}", f"{place}.{key}", item) for key, item in value.items())
    else:
        return
    for inner_pattern, inner_place, item in items:
        if item is not None:
            yield inner_pattern, inner_place, item
            yield from _nested_values(item, inner_pattern, inner_place)


def _check_nested_kinds(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every value at one place inside the rows' lists and objects (``spans[].start``) is of one
    kind, as Arrow needs. Where kinds mix, the odd one out is the first value not of the kind
    most values there are: ``"0"`` among whole numbers is named, not the first whole number."""
    seen: dict[str, dict[str, list[Any]]] = {}  # pattern -> kind -> [count, first row, place, value]
    for number, row in enumerate(rows):
        for column, value in row.items():
            if column in INTERNAL_COLUMNS or not isinstance(value, (list, dict)):
                continue
            for pattern, place, item in _nested_values(value, column, column):
                first = seen.setdefault(pattern, {}).setdefault(_nested_kind(item), [0, number, place, item])
                first[0] += 1
    mixed = []
    for pattern, kinds in seen.items():
        if len(kinds) > 1:
            order = list(kinds)  # kinds in the order they first appear
            usual = max(order, key=lambda k: (kinds[k][0], -order.index(k)))
            odd = next(k for k in order if k != usual)
            mixed.append((kinds[odd][1], pattern, usual, odd))
    if not mixed:
        return
    _, pattern, usual, odd = min(mixed)
    _, odd_row, odd_place, odd_value = seen[pattern][odd]
    _, usual_row, _, usual_value = seen[pattern][usual]
    raise DataError(f"{where(str(path), rows[odd_row])}: {odd_place} is {_shown(odd_value)} ({odd}), but {pattern} "
                    f"holds {usual} elsewhere ({place_of(rows[usual_row])}: {_shown(usual_value)}); "
                    f"write it as {usual}")


def _shown(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def utf8_errors_named(path: Path) -> Iterator[None]:
    """Turn a ``UnicodeDecodeError`` raised while reading ``path`` into a ``DataError`` naming
    the line and the byte (a text handle decodes lazily, so it surfaces mid-iteration)."""
    try:
        yield
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def not_utf8(path: Path) -> DataError:
    """The error for a file that is not UTF-8: the line and the byte offset (from 0, as a hex
    dump counts) of its first byte that cannot be decoded, and that byte."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):  # UTF-8 never holds byte 0x0a inside a character
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                return DataError(f"{path} line {number} (byte offset {bad}): not valid UTF-8 "
                                 f"(0x{raw[exc.start]:02x}); re-encode the file as UTF-8")
            offset += len(raw)
    return DataError(f"{path}: not valid UTF-8; re-encode the file as UTF-8")


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


def load_hub_split(name: str, config: str | None, split: str) -> Dataset:
    """One split of a hub dataset: from the local cache, else from the Hub when it answers.

    Without a network the error comes at once and says so, instead of minutes of retries.
    """
    import datasets

    from .hub import hub_reachable

    if not hub_reachable():
        previous = datasets.config.HF_HUB_OFFLINE
        datasets.config.HF_HUB_OFFLINE = True  # the cache only
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except Exception:  # noqa: BLE001 - not cached: say why it cannot be fetched
            require_hub("dataset", name, "use local files (--train/--validation/--test) instead")
            raise
        finally:
            datasets.config.HF_HUB_OFFLINE = previous
    else:
        ds = datasets.load_dataset(name, config, split=split)
    if len(ds) == 0:
        raise DataError(f"{name} ({split}): no examples in the split")
    return ds.add_column(LINE_COLUMN, list(range(1, len(ds) + 1)))


def load_splits(config: Any, fallback_format: str | None = None) -> tuple[DatasetDict, dict[str, str]]:
    """The train/validation/test splits a config names, and where each came from.

    ``fallback_format`` reads files whose extension says nothing (the task's usual format)."""
    splits: dict[str, Dataset] = {}
    sources: dict[str, str] = {}
    if config.dataset:
        wanted = {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}
        for split, name in wanted.items():
            if name:
                ds = load_hub_split(config.dataset, config.dataset_config, name)
                if split == "train" and config.max_train_samples:
                    ds = ds.select(range(min(config.max_train_samples, len(ds))))
                splits[split] = ds
                sources[split] = f"{config.dataset}[{name}]"
    for split, path in (("train", config.train_file), ("validation", config.validation_file), ("test", config.test_file)):
        if path:
            limit = config.max_train_samples if split == "train" else None
            splits[split] = read_file(path, config.file_format, limit, fallback_format, config.column_names)
            sources[split] = str(path)
    fraction = getattr(config, "validation_fraction", None)
    if fraction and "train" in splits:
        if "validation" in splits:
            raise DataError("validation_fraction: a validation split is given too; use one or the other")
        train = splits["train"]
        cut = len(train) - max(1, round(len(train) * fraction))
        if cut < 1:
            raise DataError(f"{sources['train']}: {len(train)} rows are too few to hold out a validation part")
        splits["train"], splits["validation"] = train.select(range(cut)), train.select(range(cut, len(train)))
        sources["validation"] = f"{sources['train']} (last {len(train) - cut} rows)"
        sources["train"] = f"{sources['train']} (first {cut} rows)"
    return DatasetDict(splits), sources


def require_columns(ds: Dataset, columns: Iterable[str], source: str, option_hint: dict[str, str]) -> None:
    """Error naming the file, the missing column and the columns that are there."""
    present = [c for c in ds.column_names if c not in INTERNAL_COLUMNS]
    for column in columns:
        if column not in present:
            hint = option_hint.get(column, "")
            raise DataError(
                f"{source}: column '{column}' not found; the columns are {', '.join(present)}"
                + (f" (set {hint})" if hint else "")
            )


def require_text(ds: Dataset, columns: Iterable[str], source: str) -> None:
    """Every value of the text ``columns`` is a string that is not blank; else an error naming the
    file, the line and the column."""
    columns = list(columns)
    for row in iter_rows(ds, columns):
        for column in columns:
            value = row[column]
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where(source, row)}: column '{column}' is empty")
            if not isinstance(value, str):
                raise DataError(f"{where(source, row)}: column '{column}' is not text ({type(value).__name__})")


def iter_rows(ds: Dataset, columns: Iterable[str]) -> Iterable[dict[str, Any]]:
    """The rows of ``ds`` as dicts of the given columns (those present) and the location columns
    that ``where`` reads, one column read at a time."""
    present = [c for c in dict.fromkeys([*columns, *INTERNAL_COLUMNS]) if c in ds.column_names]
    for values in zip(*(column_values(ds, c) for c in present)):
        yield dict(zip(present, values))


def place_of(row: dict[str, Any]) -> str:
    """'line N' (or 'item N' in a JSON document) of a row read by these readers; '' if unknown."""
    line = row.get(LINE_COLUMN)
    if line is not None:
        return f"line {line}"
    item = row.get(ITEM_COLUMN)
    return f"item {item}" if item is not None else ""


def line_numbers(raw: Dataset) -> list[int] | None:
    """The file line each row was read from (the column these readers add), or None for rows that
    came without one (a dataset built in memory)."""
    return column_values(raw, LINE_COLUMN) if LINE_COLUMN in raw.column_names else None


def row_places(raw: Dataset) -> tuple[str, list[int]]:
    """How a report's table names the rows of ``raw``: ("line", each row's file line) where the
    readers recorded one, else ("row", each row's position counting from 1)."""
    lines = line_numbers(raw)
    return ("line", lines) if lines else ("row", list(range(1, len(raw) + 1)))


def where(source: str, row: dict[str, Any]) -> str:
    """'file line N' (or 'file item N' in a JSON document) for a row read by these readers."""
    place = place_of(row)
    return f"{source} {place}" if place else source


def token_place(row: dict[str, Any], index: int) -> str:
    """'line N' of token ``index`` of a row: its own line in a CoNLL file, else the row's line
    and the token's position ('line N, token 3')."""
    token_lines = row.get(TOKEN_LINES_COLUMN)
    if token_lines is not None:
        return f"line {token_lines[index]}"
    place = place_of(row)
    return f"{place}, token {index + 1}" if place else f"token {index + 1}"


def where_token(source: str, row: dict[str, Any], index: int) -> str:
    """'file line N' of token ``index`` of a row (see ``token_place``): 'file line N, token 3'."""
    place = token_place(row, index)
    return f"{source} {place}" if place.startswith(("line", "item")) else f"{source}, {place}"
