import json
import random
import time
from pathlib import Path

import pytest

from finetune_kit.data import LINE_COLUMN, line_numbers, read_file, require_columns, row_places
from finetune_kit.task import DataError


def test_csv_with_quoted_commas_and_quotes(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"hello, world",pos\n"she said ""hi""",neg\nplain,pos\n', encoding="utf-8")
    ds = read_file(path)
    assert ds["text"] == ["hello, world", 'she said "hi"', "plain"]
    assert ds["label"] == ["pos", "neg", "pos"]
    assert ds[LINE_COLUMN] == [2, 3, 4]


def test_line_numbers_are_the_file_lines_of_the_rows_or_none_for_a_dataset_built_in_memory(tmp_path: Path):
    from datasets import Dataset

    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\n\nplain,b\n', encoding="utf-8")
    assert line_numbers(read_file(path)) == [2, 5]  # a record over two lines, a blank line skipped
    assert line_numbers(Dataset.from_dict({"text": ["x"], "label": ["a"]})) is None
    # a report's table names rows by their file line, else by their position from 1
    assert row_places(read_file(path)) == ("line", [2, 5])
    assert row_places(Dataset.from_dict({"text": ["x", "y"], "label": ["a", "b"]})) == ("row", [1, 2])


def test_csv_line_numbers_follow_multiline_records(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\nbroken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv line 4: expected 2 fields \(text, label\), found 1"):
        read_file(path)


def test_tsv_reads_unbalanced_quotes_verbatim(tmp_path: Path):
    path = tmp_path / "glue.tsv"
    path.write_text('sentence\tlabel\nit \'s a "great movie \t1\n"quoted" start\t0\nend quote"\t1\n', encoding="utf-8")
    ds = read_file(path)
    assert ds["sentence"] == ['it \'s a "great movie ', '"quoted" start', 'end quote"']
    assert ds["label"] == ["1", "0", "1"]


def test_tsv_wrong_field_count_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\tlabel\nx\ty\t1\nx\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv line 3: expected 3 fields \(a, b, label\), found 2"):
        read_file(path)


def test_jsonl_and_its_errors(tmp_path: Path):
    good = tmp_path / "d.jsonl"
    good.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n', encoding="utf-8")
    ds = read_file(good)
    assert ds["label"] == [1, 0] and ds[LINE_COLUMN] == [1, 3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        read_file(bad)
    arr = tmp_path / "arr.jsonl"
    arr.write_text('["a", 1]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr.jsonl line 1: expected a JSON object, found list"):
        read_file(arr)


def test_limit_keeps_first_rows(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(10)), encoding="utf-8")
    assert read_file(path, limit=3)["text"] == ["t0", "t1", "t2"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", r"empty.csv: no examples in the file"),
        ("header.csv", "text,label\n", r"header.csv: no examples in the file"),
        ("dup.csv", "text,text\na,b\n", r"dup.csv line 1: the header names column 'text' twice"),
        ("data.xml", "<a/>", r"data.xml: cannot tell the format from the extension '.xml'"),
    ],
)
def test_bad_files(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_file(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        read_file(tmp_path / "nope.csv")


def test_missing_column_lists_the_columns_and_the_option(tmp_path: Path):
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\nhi\t1\n", encoding="utf-8")
    ds = read_file(path)
    with pytest.raises(DataError, match=r"d.tsv: column 'text' not found; the columns are sentence, label "
                                        r"\(set --text-column\)"):
        require_columns(ds, ["text", "label"], str(path), {"text": "--text-column"})


def test_hub_dataset_fails_fast_and_clearly_offline():
    from finetune_kit.data import load_hub_split
    from finetune_kit.hub import HubUnreachableError

    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match=r"dataset 'someone/no-such-dataset' .* offline mode is set"):
        load_hub_split("someone/no-such-dataset", None, "train")
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ('{"text": "b", "label": "pos"}', r"m.jsonl line 2: column 'label' holds text, but line 1 holds a number"),
        ('{"text": "b", "label": true}', r"m.jsonl line 2: column 'label' holds true/false, but line 1 holds a number"),
        ('{"text": ["b"], "label": 1}', r"m.jsonl line 2: column 'text' holds a list, but line 1 holds text"),
    ],
)
def test_jsonl_column_mixing_kinds_is_a_data_error(tmp_path: Path, second, message):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "a", "label": 1}\n' + second + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_file(path)


def test_jsonl_ints_and_floats_mix(tmp_path: Path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"y": 1}\n{"y": 2.5}\n{"y": null}\n', encoding="utf-8")
    assert read_file(path)["y"] == [1.0, 2.5, None]


def test_conll_columns_docstart_and_token_lines(tmp_path: Path):
    path = tmp_path / "d.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER  \n", encoding="utf-8")
    ds = read_file(path)
    assert ds["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ds["tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]  # the last column
    assert ds["column_1"] == [["NNP", "VBZ"], ["NNP", "NNP"]]  # the ones between are numbered
    assert ds["column_2"] == [["B-NP", "B-VP"], ["B-NP", "I-NP"]]
    assert ds[LINE_COLUMN] == [3, 7]
    assert ds["_token_lines"] == [[3, 4], [7, 8]]
    assert read_file(path, limit=1)["tokens"] == [["EU", "rejects"]]


def test_conll_tabs_keep_spaces_in_tokens_and_tab_lines_separate(tmp_path: Path):
    path = tmp_path / "wnut.txt"
    path.write_text("New York\tB-location\n&lt;3\tO\n\t\nhi\tO\n", encoding="utf-8")
    ds = read_file(path, fallback_format="conll")  # the extension says nothing: the task's format
    assert ds["tokens"] == [["New York", "&lt;3"], ["hi"]]
    assert ds["tags"] == [["B-location", "O"], ["O"]]
    with pytest.raises(DataError, match=r"wnut.txt: cannot tell the format from the extension '.txt'"):
        read_file(path)


def test_conll_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "bad.conll"
    path.write_text("a\tO\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 2: a token with no tag, but line 1 has 2 columns"):
        read_file(path)
    path.write_text("a O\n\nb NN O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 3: 3 columns, but line 1 has 2 columns"):
        read_file(path)
    path.write_text("\tO\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 1: empty column 1"):
        read_file(path)
    path.write_text("-DOCSTART-\tO\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll: no examples in the file"):
        read_file(path)


def test_conll_with_only_tokens_reads_for_prediction(tmp_path: Path):
    path = tmp_path / "raw.conll"
    path.write_text("hello\nworld\n\nbye\n", encoding="utf-8")
    ds = read_file(path)
    assert ds["tokens"] == [["hello", "world"], ["bye"]] and "tags" not in ds.column_names


def test_squad_json_becomes_one_row_per_question(tmp_path: Path):
    document = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Paris is in France.", "qas": [
            {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
            {"id": "b", "question": "Who?", "answers": [], "is_impossible": True,
             "plausible_answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    ds = read_file(path)
    assert ds["id"] == ["a", "b"] and ds["title"] == ["T", "T"]
    assert ds["answers"] == [{"text": ["France"], "answer_start": [12]}, {"text": [], "answer_start": []}]
    assert read_file(path, limit=1)["id"] == ["a"]
    del document["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match=r"squad.json: data\[0\].paragraphs\[0\].qas\[0\]: 'question' is missing"):
        read_file(path)


def test_json_arrays_and_json_lines_under_a_json_name(tmp_path: Path):
    array = tmp_path / "a.json"
    array.write_text('[{"sentence": ["a"], "n": 1}, {"sentence": ["b"], "n": 2}]', encoding="utf-8")
    ds = read_file(array)
    assert ds["sentence"] == [["a"], ["b"]] and ds["_item"] == [1, 2]
    array.write_text('[{"n": 1}, {"n": "x"}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.json item 2: column 'n' holds text, but item 1 holds a number"):
        read_file(array)
    lines = tmp_path / "l.json"
    lines.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert read_file(lines)["_line"] == [1, 2]
    broken = tmp_path / "b.json"
    broken.write_text('{"text": "a",\n "label": }', encoding="utf-8")
    with pytest.raises(DataError, match=r"b.json line 2: not valid JSON"):
        read_file(broken)


def test_validation_fraction_holds_out_the_last_rows(tmp_path: Path):
    from finetune_kit.config import ConfigError, load_config
    from finetune_kit.data import load_splits

    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(10)), encoding="utf-8")
    base = dict(task="text-classification", model="m", output_dir="o", train_file=str(path))
    raw, sources = load_splits(load_config(**base, validation_fraction=0.2))
    assert raw["train"]["text"] == [f"t{i}" for i in range(8)]
    assert raw["validation"]["text"] == ["t8", "t9"]
    assert sources["validation"] == f"{path} (last 2 rows)" and sources["train"] == f"{path} (first 8 rows)"
    with pytest.raises(DataError, match="validation_fraction: a validation split is given too"):
        load_splits(load_config(**base, validation_file=str(path), validation_fraction=0.2))
    with pytest.raises(ConfigError, match=r"validation_fraction: 1.5 is not allowed; it must be in \(0, 1\)"):
        load_config(**base, validation_fraction=1.5)


def test_plain_text_is_one_row_per_non_blank_line(tmp_path: Path):
    path = tmp_path / "abstracts.txt"
    path.write_bytes("first document\r\n\n  \nsecond, with a tab\there\n".encode("utf-8"))
    ds = read_file(path, fallback_format="text")  # masked-lm's format for unknown extensions
    assert ds["text"] == ["first document", "second, with a tab\there"]
    assert ds[LINE_COLUMN] == [1, 4]
    assert read_file(path, "text")["text"] == ds["text"]
    with pytest.raises(DataError, match="abstracts.txt: cannot tell the format"):
        read_file(path)  # other tasks do not guess


# A file that is not UTF-8: Latin-1 text ("café" as 63 61 66 e9) or binary garbage on line 3.
# Byte offsets count from 0, by hand: in the CSV "text,label\n" (11 bytes) and "ab,x\n" (5) come
# before line 3, so its first byte is at 16 and the 0xe9 after "caf" at 19.
GARBAGE = b"\xfe" + random.Random(0).randbytes(300)
NOT_UTF8 = [  # name, lines 1-2, line 3 in Latin-1, offset of its 0xe9, offset of line 3
    ("d.csv", b"text,label\nab,x\n", b"caf\xe9,y\n", 19, 16),
    ("d.tsv", b"text\tlabel\nab\tx\n", b"caf\xe9\ty\n", 19, 16),
    ("d.jsonl", b'{"text": "a"}\n{"text": "b"}\n', b'{"text": "caf\xe9"}\n', 41, 28),
    ("d.json", b'[{"text": "a"},\n{"text": "b"},\n', b'{"text": "caf\xe9"}]\n', 44, 31),
    ("d.conll", b"a O\nb O\n", b"caf\xe9 O\n", 11, 8),
    ("d.txt", b"a\nb\n", b"caf\xe9\n", 7, 4),
]


@pytest.mark.parametrize(("name", "head", "latin1", "latin1_offset", "line3_offset"), NOT_UTF8,
                         ids=[case[0] for case in NOT_UTF8])
@pytest.mark.parametrize("kind", ["latin-1", "binary"])
def test_a_file_that_is_not_utf8_names_the_line_and_the_byte(tmp_path: Path, name, head, latin1, latin1_offset,
                                                             line3_offset, kind):
    path = tmp_path / name
    if kind == "latin-1":
        path.write_bytes(head + latin1)
        offset, byte = latin1_offset, "0xe9"
    else:
        path.write_bytes(head + GARBAGE)
        offset, byte = line3_offset, "0xfe"
    with pytest.raises(DataError) as caught:
        read_file(path, "text" if name.endswith(".txt") else "auto")
    assert str(caught.value) == (f"{path} line 3 (byte offset {offset}): not valid UTF-8 ({byte}); "
                                 f"re-encode the file as UTF-8")


def test_a_bad_byte_far_into_the_file_is_found(tmp_path: Path):
    """Decoding goes by blocks of the file; the line and offset still count from its start.
    Rows t0..t2999 take 10*5 + 90*6 + 900*7 + 2000*8 = 22890 bytes after the 11-byte header."""
    path = tmp_path / "big.csv"
    path.write_bytes(b"text,label\n" + b"".join(f"t{i},a\n".encode() for i in range(3000)) + b"caf\xe9,b\n")
    with pytest.raises(DataError, match=r"big.csv line 3002 \(byte offset 22904\): not valid UTF-8 \(0xe9\)"):
        read_file(path)


def test_predict_input_that_is_not_utf8_is_a_one_line_error(tiny_encoder, sentiment_files, tmp_path: Path):
    from typer.testing import CliRunner

    import finetune_kit as fk
    from finetune_kit.cli import app

    model = tmp_path / "model"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             output_dir=str(model), max_steps=1, report_plots=False, bootstrap_resamples=0)
    bad = tmp_path / "in.csv"
    bad.write_bytes(b"text\ngood movie\ncaf\xe9\n")  # 0xe9 after 5 + 11 + 3 bytes
    result = CliRunner().invoke(app, ["predict", str(model), "--input", str(bad), "--output",
                                      str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2
    assert "in.csv line 3 (byte offset 19): not valid UTF-8 (0xe9); re-encode the file as UTF-8" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p.jsonl").exists()


def test_nested_values_of_mixed_kinds_name_the_odd_one(tmp_path: Path):
    """Arrow stores one kind per place inside lists and objects: a mix is an error naming the
    line and the place of the value that differs from what most lines hold there."""
    span = '{{"tokens": ["a", "b"], "spans": [{{"start": {}, "end": 2, "label": "X"}}]}}\n'
    path = tmp_path / "s.jsonl"
    path.write_text(span.format('"0"') + span.format(0) + span.format(1), encoding="utf-8")
    with pytest.raises(DataError, match=r'^\S*s.jsonl line 1: spans\[0\].start is "0" \(text\), but '
                                        r"spans\[\].start holds a whole number elsewhere \(line 2: 0\); "
                                        r"write it as a whole number$"):
        read_file(path)
    for value, kind in (("1.5", "a decimal number"), ("true", "true/false")):
        path.write_text(span.format(0) + span.format(1) + span.format(value), encoding="utf-8")
        with pytest.raises(DataError, match=rf"s.jsonl line 3: spans\[0\].start is {value} \({kind}\)"):
            read_file(path)
    path.write_text('{"tokens": ["a", "b"]}\n{"tokens": ["c", 5]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"s.jsonl line 2: tokens\[1\] is 5 \(a whole number\), but tokens\[\] "
                                        r'holds text elsewhere \(line 1: "a"\)'):
        read_file(path)
    array = tmp_path / "a.json"
    array.write_text('[{"ner": [{"index": [0, 1]}]}, {"ner": [{"index": [2, "3"]}]}]', encoding="utf-8")
    with pytest.raises(DataError, match=r'a.json item 2: ner\[0\].index\[1\] is "3" \(text\), but ner\[\].index\[\] '
                                        r"holds a whole number elsewhere \(item 1: 0\)"):
        read_file(array)


def test_an_unclosed_quote_names_the_line_where_its_record_starts(tmp_path: Path):
    path = tmp_path / "quote.csv"
    path.write_text('text,label\ngood,pos\n"bad, neg\nfine,pos\nok,pos\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"quote\.csv line 3: malformed CSV \(.*\); a quote opened in this record"):
        read_file(path)


@pytest.mark.parametrize("paragraph, where", [
    ("not a paragraph", r"data\[0\]\.paragraphs\[0\]: expected a JSON object, found str"),
    ({"context": "a b", "qas": [7]}, r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: expected a JSON object, found int"),
])
def test_squad_parts_that_are_not_objects_are_named(tmp_path: Path, paragraph, where):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}),
                    encoding="utf-8")
    with pytest.raises(DataError, match=where):
        read_file(path)


def test_column_names_read_a_file_without_a_header(tmp_path: Path):
    """The first line is data; each record must have one field per name; lines count from 1."""
    path = tmp_path / "plain.tsv"
    path.write_text('first "text\tpos\t7\nsecond\tneg\t8\n', encoding="utf-8")
    ds = read_file(path, column_names=["text", "label", "id"])
    assert ds["text"] == ['first "text', "second"] and ds["id"] == ["7", "8"]
    assert ds[LINE_COLUMN] == [1, 2]
    with pytest.raises(DataError, match=r"plain.tsv line 1: expected 2 fields \(text, label\), found 3$"):
        read_file(path, column_names=["text", "label"])
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text('"a, b",x\nc,y\n', encoding="utf-8")
    assert read_file(csv_path, column_names=["text", "label"])["text"] == ["a, b", "c"]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="rows.jsonl: column_names names the columns of CSV and TSV files"):
        read_file(jsonl, column_names=["text"])
