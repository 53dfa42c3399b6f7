import json
import time
from pathlib import Path

import pytest

from finetune_kit.data import LINE_COLUMN, read_file, require_columns
from finetune_kit.task import DataError


def test_csv_with_quoted_commas_and_quotes(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"hello, world",pos\n"she said ""hi""",neg\nplain,pos\n', encoding="utf-8")
    ds = read_file(path)
    assert ds["text"] == ["hello, world", 'she said "hi"', "plain"]
    assert ds["label"] == ["pos", "neg", "pos"]
    assert ds[LINE_COLUMN] == [2, 3, 4]


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
