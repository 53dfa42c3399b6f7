"""Columns are read whole: ``column_values`` keeps row order, and training and evaluation never
iterate a lazy ``datasets`` Column row by row nor look its items up one at a time (each such read
costs microseconds per row: seconds on a split of SST-2's size)."""

import pytest
from datasets import Dataset
from datasets.arrow_dataset import Column

import finetune_kit as fk
from finetune_kit.columns import column_values
from tests.test_token_classification import ner_files, train_ner  # noqa: F401  (fixture)


def test_column_values_follow_the_rows_after_shuffle_and_select():
    ds = Dataset.from_dict({"text": [f"t{i}" for i in range(50)], "ids": [[i] * (i % 4) for i in range(50)]})
    view = ds.shuffle(seed=3).select([7, 0, 31, 12, 12, 49])
    rows = [view[i] for i in range(len(view))]
    assert column_values(view, "text") == [r["text"] for r in rows]
    assert column_values(view, "ids") == [r["ids"] for r in rows]
    assert isinstance(column_values(view, "text"), list)


@pytest.fixture()
def row_wise_reads_refused(monkeypatch):
    """A lazy Column iterated, or indexed by position, fails the test."""
    def refuse_iteration(self):
        raise AssertionError(f"column '{self.column_name}' iterated row by row")

    indexed = Column.__getitem__

    def refuse_item(self, key):
        if isinstance(key, int):
            raise AssertionError(f"column '{self.column_name}' read item by item")
        return indexed(self, key)

    monkeypatch.setattr(Column, "__iter__", refuse_iteration)
    monkeypatch.setattr(Column, "__getitem__", refuse_item)


def test_classification_reads_columns_whole(tiny_encoder, sentiment_files, tmp_path, row_wise_reads_refused):
    out = tmp_path / "m"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(sentiment_files["train"]),
             validation_file=str(sentiment_files["validation"]), output_dir=str(out), batch_size=8, max_steps=2)
    metrics = fk.evaluate(str(out), str(sentiment_files["test"]), output=str(tmp_path / "eval"))
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_tagging_reads_columns_whole(tiny_encoder, ner_files, tmp_path, row_wise_reads_refused):  # noqa: F811
    out = tmp_path / "m"
    train_ner(tiny_encoder, ner_files, out, max_steps=2)
    metrics = fk.evaluate(str(out), str(ner_files["test"]), output=str(tmp_path / "eval"))
    assert metrics["num_gold_entities"] == 8  # those of the first five sentences
