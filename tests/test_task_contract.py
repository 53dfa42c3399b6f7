"""The Task contract: every task derives from TaskBase, whose defaults the core reads directly;
a plugin with only the required members trains, loads and predicts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

import finetune_kit as fk
from finetune_kit import registry
from finetune_kit.heads import head_dropout
from finetune_kit.task import ROW_INDEX, OutputBatch, TaskBase
from tests.conftest import NEGATIVE, POSITIVE, REPO, write_csv

LABELS = ["neg", "pos"]


class FirstTokenClassifier(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        logits = self.head(self.encoder(**inputs).last_hidden_state[:, 0])
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MinimalMembers:
    """The required members of the contract and nothing else: a pos/neg classifier."""

    name: ClassVar[str] = "minimal"
    default_metric: ClassVar[str] = "accuracy"

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.tokenizer: Any = None

    def setup(self, raw: DatasetDict, tokenizer: Any, sources: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        for split, ds in raw.items():
            self.validate(ds, split, sources.get(split, split))

    def validate(self, raw: Dataset, split: str, source: str) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def build_model(self, encoder: nn.Module) -> nn.Module:
        return FirstTokenClassifier(encoder)

    def preprocess(self, batch: dict[str, list], split: str) -> dict[str, list]:
        encoded = self.tokenizer(batch["text"], truncation=True, max_length=self.settings.max_length)
        out = {"input_ids": encoded["input_ids"], "example_index": batch[ROW_INDEX]}
        if split != "predict":
            out["labels"] = [LABELS.index(v) for v in batch["label"]]
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [self.tokenizer.pad_token_id] * (longest - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features]
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch

    def to_examples(self, inputs: Iterable[Any]) -> list[dict[str, Any]]:
        return [{"text": text} for text in inputs]

    def postprocess(self, raw: Dataset, features: Dataset, outputs: Iterator[OutputBatch]) -> list[dict[str, Any]]:
        example_of = np.asarray(features["example_index"])
        best = np.zeros(len(raw), dtype=np.int64)
        for indices, arrays in outputs:
            best[example_of[indices]] = arrays["logits"].argmax(axis=1)
        return [{"label": LABELS[b]} for b in best]

    def compute_metrics(self, predictions: list[dict[str, Any]], raw: Dataset) -> dict[str, Any]:
        right = sum(p["label"] == gold for p, gold in zip(predictions, raw["label"]))
        return {"accuracy": right / len(raw)}


class MinimalTask(MinimalMembers, TaskBase):
    """The same members in a TaskBase subclass."""


def test_every_registered_task_is_a_task_base():
    for name in registry.available_tasks():
        assert issubclass(registry.get_task_class(name), TaskBase), name


def test_a_class_without_the_required_members_is_named(monkeypatch):
    class NoCollate(MinimalTask):
        collate = TaskBase.collate  # still abstract

    monkeypatch.setattr(registry, "_entry_points", lambda: {"bad": EntryPoint(
        name="bad", value="tests.test_task_contract:NoCollate", group=registry.ENTRY_POINT_GROUP)})
    monkeypatch.setattr("tests.test_task_contract.NoCollate", NoCollate, raising=False)
    with pytest.raises(fk.task.TaskError, match=r"^task 'bad' \(tests.test_task_contract:NoCollate\) does not "
                                                 r"implement the Task contract: missing collate$"):
        registry.get_task_class("bad")


@pytest.mark.parametrize("class_name", ["MinimalTask", "MinimalMembers"], ids=["TaskBase", "older-plugin"])
def test_a_plugin_with_only_the_required_members_trains_loads_and_predicts(
        class_name, tiny_encoder, tmp_path, monkeypatch):
    builtin = registry._entry_points()
    plugin = EntryPoint(name="minimal", value=f"tests.test_task_contract:{class_name}",
                        group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {**builtin, "minimal": plugin})
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", rows)
    validation = write_csv(tmp_path / "validation.csv", rows)
    out = tmp_path / "model"

    result = fk.train(task="minimal", model=tiny_encoder, train_file=str(train), validation_file=str(validation),
                      output_dir=str(out), max_steps=2, batch_size=4)

    assert result.global_step == 2
    assert 0.0 <= result.metrics["validation"]["accuracy"] <= 1.0
    predictor = fk.load(out)
    assert predictor.labels is None  # TaskBase's default: the task keeps no label list
    predictions = predictor.predict(["good movie", "bad movie"])
    assert [set(p) for p in predictions] == [{"label"}, {"label"}]
    assert all(p["label"] in LABELS for p in predictions)
    written = predictor.task.write_predictions(predictions, tmp_path / "predictions.jsonl")  # the default writer
    assert written == [tmp_path / "predictions.jsonl"]
    assert written[0].read_text(encoding="utf-8") == "".join(
        f'{{"label": "{p["label"]}"}}\n' for p in predictions)


TASK_PROBE = re.compile(r"\b(?:getattr|hasattr)\((?:self\.)?task(?:_class)?\b|getattr\(get_task_class")


def test_the_core_reads_the_contract_without_probing_a_task():
    probes = [f"{path.name}:{number}" for path in sorted((REPO / "finetune_kit").glob("*.py"))
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if TASK_PROBE.search(line)]
    assert probes == []


def test_a_head_keeps_an_encoder_dropout_of_zero():
    config = SimpleNamespace(hidden_dropout_prob=0.0, hidden_size=8, initializer_range=0.02)
    assert head_dropout(config) == 0.0
    assert head_dropout(SimpleNamespace(dropout=0.25)) == 0.25  # DistilBERT's name
    assert head_dropout(SimpleNamespace()) == 0.1


def test_the_example_plugin_head_takes_the_core_dropout(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "plugin_example"))
    from finetune_kit_example_plugin import Regressor

    encoder = nn.Module()
    encoder.config = SimpleNamespace(hidden_dropout_prob=0.0, hidden_size=8, initializer_range=0.02)
    assert Regressor(encoder).dropout.p == 0.0  # an encoder without dropout: none in the head either


@pytest.mark.parametrize(("name", "tag"), [
    ("text-classification", "text-classification"), ("pair-classification", "text-classification"),
    ("token-classification", "token-classification"), ("span-ner", "token-classification"),
    ("question-answering", "question-answering"), ("masked-lm", None),
])
def test_each_task_gives_its_hub_pipeline_tag(name, tag):
    assert registry.get_task_class(name).pipeline_tag == tag


class Calibrating(MinimalTask):
    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> bool:
        return True


class OlderCalibrating(MinimalMembers):
    def calibrate(self, predictions: list[dict[str, Any]], raw: Dataset) -> None:
        """Written before ``calibrate`` said whether it tuned: returns nothing."""


@pytest.mark.parametrize(("task_class", "calibrate", "tuned"), [
    (MinimalTask, True, False),  # TaskBase's calibrate tunes nothing
    (Calibrating, True, True),
    (Calibrating, False, False),  # only the split that calibrates
    (registry.as_task_class(OlderCalibrating), True, True),  # no answer: its state is saved again, as before
], ids=["default", "tuned", "not-asked", "older-plugin"])
def test_evaluation_says_whether_the_task_tuned_its_settings(task_class, calibrate, tuned, monkeypatch):
    from finetune_kit import inference

    raw = Dataset.from_dict({"text": ["good"], "label": ["pos"]})
    monkeypatch.setattr(inference, "predict_raw", lambda *args, **kwargs: [{"label": "pos"}])
    metrics, predictions, got = inference.evaluate_raw(None, None, task_class(None), raw, raw, 1, calibrate=calibrate)
    assert (metrics, predictions, got) == ({"accuracy": 1.0}, [{"label": "pos"}], tuned)


# -- the report: one method, ``report``; older plugins' ``report_sections`` adapted ---------------------

def _scored_split():
    raw = Dataset.from_dict({"text": ["good", "bad", "fine", "dull"], "label": ["pos", "neg", "pos", "neg"]})
    predictions = [{"label": label} for label in ("pos", "pos", "pos", "neg")]
    return raw, predictions, {"accuracy": 0.75, "detail": {"n": 4}}


def test_the_default_report_is_a_table_of_every_metric_shown_once(tmp_path):
    from finetune_kit.report import ReportSettings, split_report, write_evaluation
    from finetune_kit.report_content import ReportContent, metrics_table

    task = MinimalTask(None)
    raw, predictions, metrics = _scored_split()
    assert task.report(predictions, raw, metrics) == ReportContent(summary=[metrics_table(metrics)])
    settings = ReportSettings(plots=False, bootstrap_resamples=0)
    write_evaluation(tmp_path, task, {"test": metrics}, {"task": "minimal"},
                     {"test": split_report(task, predictions, raw, metrics, settings)}, None, settings)
    markdown = (tmp_path / "report.md").read_text()
    assert "## test\n\n**All metrics (as in metrics.json)**\n\n| metric | value |" in markdown
    assert "| accuracy | 0.7500 |\n| detail.n | 4 |" in markdown
    page = (tmp_path / "report.html").read_text()
    assert page.count("All metrics (as in metrics.json)") == 1 and "<details>" not in page


class SectionsPlugin(MinimalMembers):
    """An older plugin: its report is the dict ``report_sections`` returns, its summary the
    Markdown of ``write_report``."""

    def write_report(self, metrics: dict[str, Any], title: str) -> str:
        return f"## {title}\n\naccuracy: {metrics['accuracy']}"

    def report_sections(self, predictions: list[dict[str, Any]], raw: Dataset, metrics: dict[str, Any]) -> dict:
        from finetune_kit.report import section, table
        from finetune_kit.stats import mean_of

        correct = [p["label"] == gold for p, gold in zip(predictions, raw["label"])]
        wrong = [[i + 1, text] for i, (text, ok) in enumerate(zip(raw["text"], correct)) if not ok]
        errors = {**table("Errors", ["row", "text"], wrong), "summarised": True}
        return {"headline": [("accuracy", "accuracy")], "bootstrap": [mean_of("accuracy", correct)],
                "resampling_unit": "text", "sections": [section("Errors", [errors], note="The wrong ones.")]}


class SectionsTask(MinimalTask):
    """A TaskBase subclass written when TaskBase had ``report_sections``."""

    report_sections = SectionsPlugin.report_sections


@pytest.mark.parametrize("plugin", [SectionsPlugin, SectionsTask], ids=["older-plugin", "TaskBase"])
def test_a_plugin_reporting_through_report_sections_is_adapted(plugin, tmp_path):
    from finetune_kit.report import ReportSettings, split_report, write_evaluation
    from finetune_kit.report_content import ReportContent, Section, metrics_table, table

    task_class = registry.as_task_class(plugin)
    assert issubclass(task_class, TaskBase) and task_class is not plugin
    raw, predictions, metrics = _scored_split()
    content = task_class(None).report(predictions, raw, metrics)
    assert isinstance(content, ReportContent)
    assert content.summary == [metrics_table(metrics)]
    assert (content.headline, content.resampling_unit) == ([("accuracy", "accuracy")], "text")
    assert [m.name for m in content.bootstrap] == ["accuracy"]
    assert content.sections == [Section("Errors", [table("Errors", ["row", "text"], [[2, "bad"]])], "The wrong ones.")]

    settings = ReportSettings(plots=False, bootstrap_resamples=50)
    part = split_report(task_class(None), predictions, raw, metrics, settings)
    assert part["headline"][0]["value"] == 0.75 and part["intervals"]["resampling_unit"] == "text"
    write_evaluation(tmp_path, task_class(None), {"test": metrics}, {"task": "minimal"}, {"test": part}, None,
                     settings)
    markdown = (tmp_path / "report.md").read_text()
    assert "### test: Errors\n\nThe wrong ones.\n\n**Errors**" in markdown  # no longer left to write_report
    assert "accuracy: 0.75" not in markdown


def test_a_plugin_with_an_empty_report_sections_gets_its_metrics_as_a_table():
    from finetune_kit.report_content import metrics_content

    class EmptySections(MinimalMembers):
        def report_sections(self, predictions, raw, metrics):
            return {}

    raw, predictions, metrics = _scored_split()
    assert registry.as_task_class(EmptySections)(None).report(predictions, raw, metrics) == metrics_content(metrics)


def test_write_report_is_no_longer_part_of_the_contract():
    assert registry.missing_members(MinimalMembers) == []
    assert registry.as_task_class(MinimalTask) is MinimalTask  # nothing to adapt
    assert not hasattr(TaskBase, "write_report") and not hasattr(TaskBase, "report_sections")


def test_text_examples_reads_strings_pairs_and_dicts_into_the_runs_columns():
    from finetune_kit.task import TaskError, TaskSettings, text_examples

    settings = TaskSettings(text_column="review", text_pair_column="answer")
    assert text_examples("t", ["good", {"review": "bad", "x": 1}], settings) == [{"review": "good"},
                                                                                 {"review": "bad", "x": 1}]
    assert text_examples("p", [("a", "b"), ["c", "d"]], settings, pairs=True) == [
        {"review": "a", "answer": "b"}, {"review": "c", "answer": "d"}]
    with pytest.raises(TaskError, match="^t predicts from strings or dicts, not int$"):
        text_examples("t", [3], settings)
    with pytest.raises(TaskError, match=r"^p predicts from \(text, text_pair\) pairs or dicts, not 'solo'$"):
        text_examples("p", ["solo"], settings, pairs=True)
