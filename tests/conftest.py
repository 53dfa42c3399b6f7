"""Shared fixtures: a tiny randomly initialised BERT encoder built from a config, and small
labelled files. Nothing here touches the network or ../shared."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402

from tests.launched import two_process_runs  # noqa: E402,F401  (a fixture)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def build_tiny_encoder(directory: Path, seed: int = 0, **config_overrides: object) -> Path:
    """Save a 2-layer, hidden-32 BERT with the fixture vocabulary to ``directory``; keyword
    arguments change its ``BertConfig`` (e.g. ``hidden_dropout_prob=0.0``)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab=str(FIXTURES / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, **config_overrides,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def one_torch_thread():
    """Body of a module's autouse fixture (``pytest.fixture(scope="module", autouse=True)(...)``)
    for bit-identical comparisons: the same reductions need the same thread count in every run
    compared, module-scoped fixtures included; one thread is also faster on a busy small machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


single_torch_thread = pytest.fixture(one_torch_thread)  # the same for one test: request it by name


@pytest.fixture(autouse=True)
def torch_threads_left_as_found():
    """A test that changes torch's thread count and leaves it changed changes the speed of every
    later test in the process (a real encoder trains at about 0.65x on one thread of two): each
    test must restore it."""
    import torch

    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads, f"the test left torch at {torch.get_num_threads()} threads, not {threads}"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert")))


POSITIVE = ["good movie", "great film and fine acting", "i love this story", "excellent music",
            "really nice scene", "fun and good plot", "a great day", "nice work by the actor"]
NEGATIVE = ["bad movie", "awful film and poor acting", "i hate this story", "terrible music",
            "really boring scene", "poor and bad plot", "an awful day", "bad work by the actor"]


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None, delimiter: str = ",") -> Path:
    fieldnames = fieldnames or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_files(tmp_path: Path) -> dict[str, Path]:
    """A keyword-learnable sentiment set: train (32 rows), validation and test (16 rows each)."""
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return {
        "train": write_csv(tmp_path / "train.csv", rows * 2),
        "validation": write_csv(tmp_path / "validation.csv", rows),
        "test": write_csv(tmp_path / "test.csv", rows),
    }


@pytest.fixture()
def pair_files(tmp_path: Path) -> dict[str, Path]:
    """A tiny NLI-style set in GLUE TSV form (integer labels, an unbalanced quote)."""
    rows = [
        {"sentence1": 'the cat sat on the mat "', "sentence2": "the cat sat", "label": 1},
        {"sentence1": "the dog ran in the park", "sentence2": "the cat sat", "label": 0},
        {"sentence1": "a man made a film", "sentence2": "a film was made", "label": 1},
        {"sentence1": "she went to work", "sentence2": "the dog ran", "label": 0},
    ]
    lines = ["sentence1\tsentence2\tlabel"] + [f"{r['sentence1']}\t{r['sentence2']}\t{r['label']}" for r in rows]
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines * 1) + "\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"train": train, "validation": dev}


def has_shared_data() -> bool:
    return SHARED_DATA.is_dir()
