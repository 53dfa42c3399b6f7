"""The token-classification task on tiny encoders: learning, windows, CRF, schemes, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.api import task_settings
from finetune_kit.cli import app
from finetune_kit.modeling import load_tokenizer
from finetune_kit.tagging import first_invalid_transition
from finetune_kit.task import DataError
from finetune_kit.inference import prepare_features
from finetune_kit_tasks.token_classification import TokenClassificationTask
from tests.conftest import SHARED_DATA, write_jsonl

# Toy NER, IOB2: animals (ANI) and people (PER), some of two words, some split into subwords
# by the fixture vocabulary ("actors" -> actor ##s, "dogs" -> dog ##s).
SENTENCES = [
    ("the cat sat on the mat", "O B-ANI O O O O"),
    ("the old man saw the dog", "O B-PER I-PER O O B-ANI"),
    ("a woman and her cat went to the park", "O B-PER O O B-ANI O O O O"),
    ("the big dog ran", "O B-ANI I-ANI O"),
    ("my child love this dog", "O B-PER O O B-ANI"),
    ("the old woman sat", "O B-PER I-PER O"),
    ("a small cat and a big dog", "O B-ANI I-ANI O O B-ANI I-ANI"),
    ("he saw the man", "O O O B-PER"),
    ("the actors love dogs", "O B-PER O B-ANI"),
    ("she made a film", "O O O O"),
]


def conll_text(sentences, docstart=True) -> str:
    blocks = ["-DOCSTART-\tO\n"] if docstart else []
    for text, tags in sentences:
        blocks.append("".join(f"{w}\t{t}\n" for w, t in zip(text.split(), tags.split())))
    return "\t\n".join(blocks)  # WNUT-style separators: a line holding only a tab


@pytest.fixture()
def ner_files(tmp_path: Path) -> dict[str, Path]:
    train = tmp_path / "train.conll"
    train.write_text(conll_text(SENTENCES * 3), encoding="utf-8")
    dev = tmp_path / "dev.conll"
    dev.write_text(conll_text(SENTENCES), encoding="utf-8")
    test = tmp_path / "test.annotated"  # an extension that says nothing: read as CoNLL
    test.write_text(conll_text(SENTENCES[:5], docstart=False), encoding="utf-8")
    return {"train": train, "validation": dev, "test": test}


def train_ner(tiny_encoder, files, out, **settings):
    defaults = dict(task="token-classification", model=tiny_encoder, train_file=str(files["train"]),
                    validation_file=str(files["validation"]), output_dir=str(out), batch_size=8)
    return fk.train(**{**defaults, **settings})


@pytest.mark.parametrize("options", [{}, {"crf": True}, {"crf": True, "subword_labels": "all"}],
                         ids=["softmax", "crf", "crf-all-subwords"])
def test_learns_toy_ner(tiny_encoder, ner_files, tmp_path, options):
    result = train_ner(tiny_encoder, ner_files, tmp_path / "m", epochs=25, learning_rate=5e-3,
                       test_file=str(ner_files["test"]), task_options=options)
    for split in ("validation", "test"):
        assert result.metrics[split]["f1"] == 1.0, result.metrics[split]
        assert result.metrics[split]["default_mode"]["f1"] == 1.0
    assert result.metrics["validation"]["num_gold_entities"] == 14
    predictor = fk.load(tmp_path / "m")
    [out] = predictor.predict(["a small cat and a big dog"])
    assert out["tags"] == ["O", "B-ANI", "I-ANI", "O", "O", "B-ANI", "I-ANI"]
    assert out["entities"] == [{"start": 1, "end": 3, "type": "ANI", "text": "small cat"},
                               {"start": 5, "end": 7, "type": "ANI", "text": "big dog"}]


def test_save_load_and_evaluate_reproduce_training(tiny_encoder, ner_files, tmp_path):
    result = train_ner(tiny_encoder, ner_files, tmp_path / "m", epochs=4, learning_rate=3e-3,
                       test_file=str(ner_files["test"]), task_options={"crf": True})
    manifest = json.loads((tmp_path / "m" / "finetune_kit.json").read_text())
    assert manifest["task_state"]["scheme"] == "IOB2"
    assert manifest["task_state"]["labels"] == ["O", "B-ANI", "I-ANI", "B-PER", "I-PER"]
    evaluated = fk.evaluate(tmp_path / "m", ner_files["test"], tmp_path / "eval")
    assert evaluated.pop("loss") == pytest.approx(result.metrics["test"].pop("loss"), abs=1e-5)
    assert evaluated == result.metrics["test"]
    sentences = [s.split() for s, _ in SENTENCES]
    first = fk.load(tmp_path / "m").predict(sentences)
    assert fk.load(tmp_path / "m").predict(sentences) == first
    assert [len(p["tags"]) for p in first] == [len(s) for s in sentences]


def test_every_word_of_a_long_sentence_is_predicted_once(tiny_encoder, tmp_path):
    """36 one-subword words, max_length 12 (10 words a window, stride 4): six windows, each word
    predicted from the window where it has the most context (worked out in test_alignment)."""
    words = "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9".split()
    tags = [f"t{i % 6}" for i in range(36)]
    task = TokenClassificationTask(task_settings({"max_length": 12, "task_options": {"stride": 4}},
                                                 TokenClassificationTask))
    raw = Dataset.from_list([{"tokens": words, "tags": tags}])
    task.setup(DatasetDict(train=raw), load_tokenizer(tiny_encoder), {"train": "mem"})
    assert task.scheme == "none" and task.labels == [f"t{i}" for i in range(6)]
    features = prepare_features(task, raw, "train")
    assert [(f["first_word"], len(f["word_positions"])) for f in features] == \
        [(0, 10), (6, 10), (12, 10), (18, 10), (24, 10), (30, 6)]
    predicted = sorted(i for f in features for i in f["predict_words"])
    assert predicted == list(range(36))
    # every feature "predicts" its window number, so the merged tags show where each word came from
    logits = np.zeros((len(features), 12, 6), dtype=np.float32)
    for w in range(len(features)):
        logits[w, :, w] = 1.0
    outputs = iter([(np.arange(len(features)), {"logits": logits})])
    [merged] = task.postprocess(raw, features, outputs)
    owners = [0] * 8 + [1] * 6 + [2] * 6 + [3] * 6 + [4] * 6 + [5] * 4
    assert merged["tags"] == [f"t{w}" for w in owners]
    assert merged["tokens"] == words


@pytest.mark.parametrize("crf", [False, True])
def test_long_sentences_and_empty_words_get_a_tag_each(tiny_encoder, ner_files, tmp_path, crf):
    train_ner(tiny_encoder, ner_files, tmp_path / "m", max_steps=3, max_length=12, task_options={"crf": crf})
    predictor = fk.load(tmp_path / "m")
    long = ("the old man saw the big dog and the goodness of actors " * 3).split() + ["\u200b", "cat"]
    assert len(predictor.tokenizer(long, is_split_into_words=True)["input_ids"]) > 3 * 12
    [out] = predictor.predict([long])
    assert out["tokens"] == long and len(out["tags"]) == len(long)
    assert set(out["tags"]) <= set(predictor.labels)
    if crf:
        assert first_invalid_transition(out["tags"], "IOB2") is None


def test_all_subwords_strategy_labels_continuations_inside(tiny_encoder):
    tokenizer = load_tokenizer(tiny_encoder)
    raw = Dataset.from_list([{"tokens": ["the", "actors", "love", "dogs"], "tags": ["O", "B-PER", "O", "B-ANI"]}])
    labels = {}
    for strategy in ("first", "all"):
        task = TokenClassificationTask(task_settings({"task_options": {"subword_labels": strategy}},
                                                     TokenClassificationTask))
        task.setup(DatasetDict(train=raw), tokenizer, {"train": "mem"})
        feature = prepare_features(task, raw, "train")[0]
        assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == \
            ["[CLS]", "the", "actor", "##s", "love", "dog", "##s", "[SEP]"]
        labels[strategy] = [task.labels[i] if i >= 0 else None for i in feature["labels"]]
    assert labels["first"] == [None, "O", "B-PER", None, "O", "B-ANI", None, None]
    assert labels["all"] == [None, "O", "B-PER", "I-PER", "O", "B-ANI", "I-ANI", None]


def test_iob1_data_is_converted_and_bioes_data_decodes_validly(tiny_encoder, tmp_path):
    iob1 = [("the old man saw the dog", "O I-PER I-PER O O I-ANI"), ("a cat a dog", "O I-ANI O I-ANI"),
            ("the cat the dog", "O I-ANI O I-ANI")]
    path = write_jsonl(tmp_path / "iob1.jsonl", [{"tokens": t.split(), "tags": g.split()} for t, g in iob1])
    fk.train(task="token-classification", model=tiny_encoder, train_file=str(path), validation_file=str(path),
             output_dir=str(tmp_path / "iob1"), max_steps=2)
    state = json.loads((tmp_path / "iob1" / "finetune_kit.json").read_text())["task_state"]
    assert (state["source_scheme"], state["scheme"]) == ("IOB1", "IOB2")
    metrics = json.loads((tmp_path / "iob1" / "metrics.json").read_text())["validation"]
    assert metrics["num_gold_entities"] == 6  # 2 a sentence: every I- that starts an entity became B-

    bioes = [("the old man saw the dog", "O B-PER E-PER O O S-ANI"), ("a big dog ran", "O B-ANI E-ANI O")]
    path = write_jsonl(tmp_path / "bioes.jsonl", [{"tokens": t.split(), "tags": g.split()} for t, g in bioes])
    fk.train(task="token-classification", model=tiny_encoder, train_file=str(path), output_dir=str(tmp_path / "b"),
             max_steps=2, task_options={"crf": True})
    predictor = fk.load(tmp_path / "b")
    assert predictor.task.scheme == "BIOES"
    assert predictor.labels == ["O", "B-ANI", "I-ANI", "E-ANI", "S-ANI", "B-PER", "I-PER", "E-PER", "S-PER"]
    for out in predictor.predict(["the old man saw the big dog and a cat"] * 2):
        assert first_invalid_transition(out["tags"], "BIOES") is None


def test_hub_class_label_tags_are_mapped_to_names(tiny_encoder):
    names = ["O", "B-ANI", "I-ANI"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    raw = Dataset.from_dict({"tokens": [["the", "big", "dog"], ["a", "cat"]], "ner_tags": [[0, 1, 2], [0, 1]]},
                            features=features)
    task = TokenClassificationTask(task_settings({"label_column": "ner_tags"}, TokenClassificationTask))
    task.setup(DatasetDict(train=raw), load_tokenizer(tiny_encoder), {"train": "wnut_17[train]"})
    assert task.labels == names and task.scheme == "IOB2"
    predictions = [{"tags": ["O", "B-ANI", "I-ANI"]}, {"tags": ["O", "O"]}]
    metrics = task.compute_metrics(predictions, raw)
    assert (metrics["precision"], metrics["recall"]) == (1.0, 0.5)


def test_plain_tags_train_on_token_accuracy(tiny_encoder, tmp_path):
    rows = [{"tokens": "the cat sat".split(), "tags": ["DT", "NN", "VB"]},
            {"tokens": "a dog ran".split(), "tags": ["DT", "NN", "VB"]}]
    path = write_jsonl(tmp_path / "pos.jsonl", rows)
    result = fk.train(task="token-classification", model=tiny_encoder, train_file=str(path),
                      validation_file=str(path), output_dir=str(tmp_path / "pos"), max_steps=2)
    validation = result.metrics["validation"]
    assert validation["scheme"] == "none"
    assert 0.0 <= validation["token_accuracy"] <= 1.0
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 6
    log = [json.loads(line) for line in (tmp_path / "pos" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["metric_for_best"] == "token_accuracy"


# -- bad input ---------------------------------------------------------------------------------

def test_unknown_tag_names_file_and_line(tiny_encoder, ner_files, tmp_path):
    dev = tmp_path / "bad.conll"
    dev.write_text("the\tO\ncat\tB-ANI\n\nthe\tO\nparis\tB-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 5: tag 'B-LOC' was never seen in training"):
        train_ner(tiny_encoder, {**ner_files, "validation": dev}, tmp_path / "m", max_steps=1)
    assert not (tmp_path / "m").exists()


def test_tag_outside_the_scheme_and_strict_sequences(tiny_encoder, ner_files, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("the\tO\ncat\tB-ANI\n\nthe\tO\ndog\tANI\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 5: tag ANI has no B-/I- prefix, but the file's other tags "
                                        r"are IOB2 \(line 2: B-ANI\); fix the tag$"):
        train_ner(tiny_encoder, {**ner_files, "train": bad}, tmp_path / "m", max_steps=1)
    with pytest.raises(DataError, match=r"bad.conll line 5: tag 'ANI' is not a IOB2 tag"):
        train_ner(tiny_encoder, {**ner_files, "train": bad}, tmp_path / "m", max_steps=1,
                  task_options={"scheme": "IOB2"})
    loose = tmp_path / "loose.conll"
    loose.write_text("the\tO\ncat\tB-ANI\n\nthe\tO\ndog\tI-ANI\n", encoding="utf-8")
    loose_files = {"train": loose, "validation": loose}
    train_ner(tiny_encoder, loose_files, tmp_path / "ok", max_steps=1)  # read as it is
    with pytest.raises(DataError, match=r"loose.conll line 5: 'I-ANI' cannot follow 'O' in IOB2 \(strict_tags\)"):
        train_ner(tiny_encoder, loose_files, tmp_path / "m", max_steps=1,
                  task_options={"strict_tags": True, "scheme": "IOB2"})


def test_jsonl_tokens_and_tags_must_pair_up(tiny_encoder, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"tokens": ["a", "cat"], "tags": ["O", "B-ANI"]},
                                              {"tokens": ["a", "dog"], "tags": ["O"]}])
    with pytest.raises(DataError, match=r"d.jsonl line 2: 2 tokens but 1 tags"):
        fk.train(task="token-classification", model=tiny_encoder, train_file=str(path),
                 output_dir=str(tmp_path / "m"), max_steps=1)
    path = write_jsonl(tmp_path / "e.jsonl", [{"tokens": [], "tags": []}])
    with pytest.raises(DataError, match=r"e.jsonl line 1: a sentence without tokens"):
        fk.train(task="token-classification", model=tiny_encoder, train_file=str(path),
                 output_dir=str(tmp_path / "m"), max_steps=1)


def test_bad_task_options_fail_before_any_work(tiny_encoder, ner_files, tmp_path):
    from finetune_kit.task import TaskError

    for options, message in (({"subword_labels": "every"}, "subword_labels: 'every' is not allowed"),
                             ({"scheme": "BIOX"}, "unknown tagging scheme 'BIOX'"),
                             ({"crf": "yes"}, "crf: 'yes' is not allowed"),
                             ({"stride": 500}, "stride: 500 is not allowed"),
                             ({"pooling": "cls"}, "pooling not known to token-classification")):
        with pytest.raises(TaskError, match=message):
            train_ner(tiny_encoder, ner_files, tmp_path / "m", max_steps=1, task_options=options)


# -- command line ------------------------------------------------------------------------------

def test_cli_train_with_crf_predict_and_evaluate(tiny_encoder, ner_files, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    done = runner.invoke(app, ["train", "--task", "token-classification", "--model", tiny_encoder,
                               "--train", str(ner_files["train"]), "--validation", str(ner_files["validation"]),
                               "--output", str(out), "--max-steps", "2", "--crf"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((out / "finetune_kit.json").read_text())
    assert manifest["config"]["task_options"] == {"crf": True}
    assert "crf.transitions" in __import__("safetensors.torch").torch.load_file(out / "model.safetensors")
    predictions = tmp_path / "pred.jsonl"
    done = runner.invoke(app, ["predict", str(out), "--input", str(ner_files["test"]), "--output", str(predictions)])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["tokens"] for line in lines] == [s.split() for s, _ in SENTENCES[:5]]
    assert all(set(line) == {"tokens", "tags", "entities"} for line in lines)
    done = runner.invoke(app, ["evaluate", str(out), "--data", str(ner_files["test"])])
    assert done.exit_code == 0, done.output
    assert "| strict IOB2 (headline) |" in done.output and "seqeval default" in done.output


def test_cli_bad_conll_line_is_one_line_error(tiny_encoder, ner_files, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("the\tO\ncat\tB-ANI\tx\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["train", "--task", "token-classification", "--model", tiny_encoder,
                                    "--train", str(bad), "--output", str(tmp_path / "m")])
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        f"error: {bad} line 2: 3 columns, but line 1 has 2 columns; every token line needs the same columns"]


def test_a_stray_tag_of_another_scheme_in_training_data_is_an_error(tiny_encoder, ner_files, tmp_path):
    """One E- in IOB2 data must not make the run BIOES: the error names its line and a line of
    the file's own scheme; an explicit scheme still reads the file."""
    stray = [SENTENCES[0], ("the old man saw the dog", "O B-PER E-PER O O B-ANI"), *SENTENCES[2:]]
    train = tmp_path / "stray.conll"
    # line 1 -DOCSTART-, 2 a separator, 3-8 the first sentence ("cat" B-ANI on line 4), 9 a
    # separator, 10-15 the second ("man" E-PER on line 12)
    train.write_text(conll_text(stray), encoding="utf-8")
    with pytest.raises(DataError, match=r"^\S*stray.conll line 12: tag E-PER is BIOES, but the file's other tags "
                                        r"are IOB2 \(line 4: B-ANI\); fix the tag$"):
        train_ner(tiny_encoder, {**ner_files, "train": train}, tmp_path / "m", max_steps=1)
    assert not (tmp_path / "m").exists()
    train_ner(tiny_encoder, {"train": train, "validation": train}, tmp_path / "explicit", max_steps=1,
              task_options={"scheme": "BIOES"})
    state = json.loads((tmp_path / "explicit" / "finetune_kit.json").read_text())["task_state"]
    assert state["scheme"] == "BIOES"


def test_data_in_another_scheme_than_the_model_is_an_error(tiny_encoder, ner_files, tmp_path):
    """A BIOES model scoring IOB2 data would find no gold entity ending in B-/I-; an IOB2 model
    scoring IOB1 data none starting with I-. Both are errors naming the file and line."""
    bioes = [("the old man saw the dog", "O B-PER E-PER O O S-ANI"), ("a big dog ran", "O B-ANI E-ANI O")]
    path = write_jsonl(tmp_path / "bioes.jsonl", [{"tokens": t.split(), "tags": g.split()} for t, g in bioes])
    # ner_files["validation"]: line 3 "the" O, line 4 "cat" B-ANI, which ends its entity
    with pytest.raises(DataError, match=r"^\S*dev.conll line 4: tag B-ANI ends an entity, as IOB2 does \(BIOES ends "
                                        r"one with E- or S-\), but the model's tags are BIOES; write the file's tags "
                                        r"in the same scheme$"):
        train_ner(tiny_encoder, {**ner_files, "train": path}, tmp_path / "m", max_steps=1)
    assert not (tmp_path / "m").exists()
    fk.train(task="token-classification", model=tiny_encoder, train_file=str(path), output_dir=str(tmp_path / "b"),
             max_steps=1)
    with pytest.raises(DataError, match=r"test.annotated line 2: tag B-ANI ends an entity, as IOB2 does"):
        fk.evaluate(tmp_path / "b", ner_files["test"], tmp_path / "eval")

    iob2_model = tmp_path / "iob2"
    train_ner(tiny_encoder, ner_files, iob2_model, max_steps=1)
    iob1 = write_jsonl(tmp_path / "iob1.jsonl", [{"tokens": ["a", "dog"], "tags": ["O", "O"]},
                                                 {"tokens": ["the", "old", "man"], "tags": ["O", "I-PER", "I-PER"]}])
    with pytest.raises(DataError, match=r"iob1.jsonl line 2, token 2: tag I-PER starts an entity, as IOB1 does "
                                        r"\(IOB2 starts one with B-\), but the model's tags are IOB2"):
        fk.evaluate(iob2_model, iob1, tmp_path / "eval")
    metrics = fk.evaluate(iob2_model, ner_files["test"], tmp_path / "eval", plots=False, bootstrap_resamples=0)
    assert metrics["num_gold_entities"] == 8  # 1 + 2 + 2 + 1 + 2 in SENTENCES[:5]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_wnut17_scheme_is_read_off_the_whole_training_set(tiny_encoder):
    """WNUT-17 is IOB2; one E- tag anywhere in its 3,394 training sentences is an error naming
    that token's line, instead of turning the run (and the scoring of the dev file) to BIOES."""
    from finetune_kit.data import read_file

    wnut = SHARED_DATA / "wnut17"
    train, dev = read_file(wnut / "wnut17train.conll"), read_file(wnut / "emerging.dev.conll")
    tokenizer = load_tokenizer(tiny_encoder)
    task = TokenClassificationTask(task_settings({}, TokenClassificationTask))
    task.setup(DatasetDict(train=train, validation=dev), tokenizer, {"train": "train", "validation": "dev"})
    assert task.scheme == "IOB2"
    sentence = 3000
    position = train[sentence]["tags"].index("I-person")  # an I- inside a person: made its E-
    line = train[sentence]["_token_lines"][position]

    def stray(row, index):
        if index == sentence:
            row["tags"] = [*row["tags"][:position], "E-person", *row["tags"][position + 1:]]
        return row

    task = TokenClassificationTask(task_settings({}, TokenClassificationTask))
    with pytest.raises(DataError, match=rf"^train line {line}: tag E-person is BIOES, but the file's other tags are "
                                        r"IOB2 \(line \d+: \S+\); fix the tag$"):
        task.setup(DatasetDict(train=train.map(stray, with_indices=True)), tokenizer, {"train": "train"})
