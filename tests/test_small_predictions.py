"""Predicting for a few inputs at a time, as an application calling ``predict`` per request does:
a small split is preprocessed in one call of the task, without ``datasets.map`` (whose cache
fingerprint pickles the tokenizer), into the same features; and nothing is kept from one call to
the next, so memory stays flat."""

import finetune_kit as fk
from finetune_kit import inference
from finetune_kit.inference import prepare_features
from tests.conftest import NEGATIVE, POSITIVE
from tests.test_question_answering import toy_squad, write_squad


def features_both_ways(task, raw, split, monkeypatch):
    direct = prepare_features(task, raw, split)
    with monkeypatch.context() as patched:
        patched.setattr(inference, "MAP_BATCH_ROWS", 0)  # every split through datasets.map
        mapped = prepare_features(task, raw, split)
    return direct, mapped


def test_small_splits_get_the_features_map_gives(tiny_encoder, sentiment_files, tmp_path, monkeypatch):
    """Text classification and QA (windows, offsets, several features per question): the same
    columns and values with and without map, and the same predictions from them."""
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             validation_file=str(sentiment_files["validation"]), output_dir=str(tmp_path / "text"), max_steps=1)
    squad = write_squad(tmp_path / "toy.json", toy_squad())
    fk.train(task="question-answering", model=tiny_encoder, train_file=str(squad), output_dir=str(tmp_path / "qa"),
             max_steps=1, max_length=32, task_options={"doc_stride": 8})
    for out, data in ((tmp_path / "text", sentiment_files["test"]), (tmp_path / "qa", squad)):
        predictor = fk.load(out)
        raw = predictor.read_file(data)
        direct, mapped = features_both_ways(predictor.task, raw, "test", monkeypatch)
        assert direct.column_names == mapped.column_names and direct.to_dict() == mapped.to_dict()
        assert len(direct) >= len(raw)
        with monkeypatch.context() as patched:
            patched.setattr(inference, "MAP_BATCH_ROWS", 0)
            through_map = predictor.predict_dataset(raw)
        assert predictor.predict_dataset(raw) == through_map


def test_memory_stays_flat_over_two_thousand_single_predictions(tiny_encoder, sentiment_files, tmp_path):
    """RSS after 2,000 single-text calls is within 4 MB of RSS after 200 (each call used to keep
    its data loader, and through it its features, alive: about 20 KB a call, 40 MB here)."""
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             output_dir=str(tmp_path / "m"), max_steps=1)
    predictor = fk.load(tmp_path / "m")
    texts = [[text] for text in POSITIVE + NEGATIVE]

    def resident_kib() -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    for call in range(200):
        predictor.predict(texts[call % len(texts)])
    before = resident_kib()
    for call in range(2_000):
        predictor.predict(texts[call % len(texts)])
    assert resident_kib() - before < 4 * 1024
    assert not predictor.accelerator._dataloaders


def test_inputs_that_do_not_make_one_table_are_one_data_error(tiny_encoder, sentiment_files, tmp_path):
    import pytest

    from finetune_kit.task import DataError

    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             output_dir=str(tmp_path / "m"), max_steps=1)
    with pytest.raises(DataError, match=r"^input: the inputs do not make one table \(.*\)$"):
        fk.load(tmp_path / "m").predict([{"text": "good movie", "n": 1}, {"text": "bad", "n": "one"}])
