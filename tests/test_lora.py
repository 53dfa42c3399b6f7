"""LoRA for every task (adapter + heads saved, loaded strictly, merged export), and freezing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.adapters import AdapterError, apply_lora, lora_targets
from finetune_kit.cli import app
from finetune_kit.registry import get_task_class
from tests.conftest import NEGATIVE, POSITIVE, REPO, write_csv, write_jsonl
from tests.test_distributed import rounded
from tests.test_question_answering import toy_squad, write_squad
from tests.test_span_ner import NESTED, span_rows
from tests.test_token_classification import SENTENCES, conll_text

runner = CliRunner()


def sentiment(tmp_path: Path) -> tuple[Path, list]:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return write_csv(tmp_path / "sentiment.csv", rows), POSITIVE[:3] + NEGATIVE[:3]


def pairs(tmp_path: Path) -> tuple[Path, list]:
    rows = [{"text": a, "text_pair": b, "label": label} for a, b, label in [
        ("the cat sat on the mat", "the cat sat", "entail"), ("the dog ran in the park", "the cat sat", "other"),
        ("a man made a film", "a film was made", "entail"), ("she went to work", "the dog ran", "other")]] * 3
    return write_csv(tmp_path / "pairs.csv", rows), [("the cat sat on the mat", "the cat sat")]


def tagging(tmp_path: Path) -> tuple[Path, list]:
    path = tmp_path / "ner.conll"
    path.write_text(conll_text(SENTENCES), encoding="utf-8")
    return path, [text.split() for text, _ in SENTENCES[:3]]


def spans(tmp_path: Path) -> tuple[Path, list]:
    return write_jsonl(tmp_path / "spans.jsonl", span_rows(NESTED) * 2), [text.split() for text, _ in NESTED]


def squad(tmp_path: Path) -> tuple[Path, list]:
    inputs = [{"question": "who sat", "context": "the cat sat on the mat ."}]
    return write_squad(tmp_path / "squad.json", toy_squad(unanswerable=True)), inputs


# task, data builder, task options, head modules the adapter file must hold
CASES = {
    "text-classification": ("text-classification", sentiment, {}, ["classifier", "pooler"]),  # BERT's head
    "text-classification-pooler": ("text-classification", sentiment, {"pooling": "pooler"}, ["classifier", "pooler"]),
    "pair-classification": ("pair-classification", pairs, {}, ["classifier"]),
    "token-classification-crf": ("token-classification", tagging, {"crf": True}, ["classifier", "crf"]),
    "span-ner": ("span-ner", spans, {}, list(get_task_class("span-ner").head_modules)),
    "question-answering": ("question-answering", squad, {}, ["qa_outputs"]),
}


def assert_close(a, b, path="prediction"):
    """Equal structures, floats within tolerance (merging adds rounding)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4), path
    else:
        assert a == b, path


@pytest.mark.parametrize("case", list(CASES))
def test_lora_trains_saves_loads_and_merges(tiny_encoder, tmp_path, case):
    task, make_data, options, heads = CASES[case]
    data, inputs = make_data(tmp_path)
    out = tmp_path / "lora"
    result = fk.train(task=task, model=tiny_encoder, train_file=str(data), validation_file=str(data),
                      output_dir=str(out), lora=True, max_steps=8, batch_size=4, learning_rate=1e-2,
                      max_length=32, task_options=options)

    # the directory holds the adapter and the trained heads, not full weights
    assert not (out / "model.safetensors").exists()
    saved = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # trained (LoRA B starts at zero)
    for head in heads:
        assert any(f".{head}." in k for k in saved), f"{head} not saved with the adapter"
    assert not any("word_embeddings" in k or "original_module" in k for k in saved)

    # loading rebuilds base encoder + adapter + heads: it scores exactly as the trained model did
    evaluated = fk.evaluate(out, data, tmp_path / "eval")
    validation = dict(result.metrics["validation"])
    assert evaluated.pop("loss") == pytest.approx(validation.pop("loss"), abs=1e-5)
    assert rounded(evaluated) == rounded(validation)
    predicted = fk.load(out).predict(inputs)
    assert fk.load(out).predict(inputs) == predicted

    # merged export: a plain model directory with the same predictions
    merged = fk.export(out, tmp_path / "merged", merge=True)
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_model.safetensors").exists()
    assert json.loads((merged / "finetune_kit.json").read_text())["config"]["lora"] is False
    assert_close(fk.load(merged).predict(inputs), predicted)


def test_merged_model_loads_without_peft(tiny_encoder, tmp_path):
    data, inputs = sentiment(tmp_path)
    out = tmp_path / "lora"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(data), output_dir=str(out),
             lora=True, max_steps=4, batch_size=4, learning_rate=1e-2)
    fk.export(out, tmp_path / "merged", merge=True)
    expected = fk.load(out).predict(inputs)
    script = ("import sys, json; sys.modules['peft'] = None\n"  # any import of peft now fails
              "import finetune_kit as fk\n"
              f"print(json.dumps(fk.load({str(tmp_path / 'merged')!r}).predict({inputs!r})))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_close(json.loads(done.stdout.strip().splitlines()[-1]), expected)


def tiny_config(kind: str):
    common = {"vocab_size": 99, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    return {
        "bert": lambda: BertConfig(hidden_size=16, **common),
        "roberta": lambda: RobertaConfig(hidden_size=16, **common),
        "electra": lambda: ElectraConfig(hidden_size=16, embedding_size=16, **common),
        "deberta-v2": lambda: DebertaV2Config(hidden_size=16, **common),
        "distilbert": lambda: DistilBertConfig(vocab_size=99, dim=16, n_layers=2, n_heads=2, hidden_dim=37),
    }[kind]()


@pytest.mark.parametrize(("kind", "linear_layers"), [
    ("bert", {"query", "key", "value", "dense"}),
    ("roberta", {"query", "key", "value", "dense"}),
    ("electra", {"query", "key", "value", "dense"}),
    ("deberta-v2", {"query_proj", "key_proj", "value_proj", "dense"}),
    ("distilbert", {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"}),
])
def test_default_targets_fit_each_architecture(kind, linear_layers):
    encoder = AutoModel.from_config(tiny_config(kind))
    holder = torch.nn.Module()
    holder.encoder = encoder
    targets = lora_targets(holder, encoder, None, None)
    # every linear layer of both transformer blocks: q, k, v, attention output, two feed-forward
    assert len(targets) == 2 * 6
    assert {t.rsplit(".", 1)[-1] for t in targets} == linear_layers
    assert all(t.startswith("encoder.") and ".pooler" not in t for t in targets)
    top = lora_targets(holder, encoder, None, 1)
    assert len(top) == 6 and all(".1." in t for t in top)
    query = sorted(linear_layers - {"dense"})[0]
    assert len(lora_targets(holder, encoder, [query], None)) == 2
    with pytest.raises(AdapterError, match="not_a_layer not found"):
        lora_targets(holder, encoder, ["not_a_layer"], None)


def test_trainable_parameters_by_hand(tiny_encoder, tmp_path):
    """Tiny BERT: hidden 32, feed-forward 64, 2 layers, r=8, 2 labels; BERT's transformers head
    trains its pooler beside the classifier."""
    data, _ = sentiment(tmp_path)
    done = runner.invoke(app, ["train", "--task", "text-classification", "--model", tiny_encoder, "--train", str(data),
                               "--output", str(tmp_path / "out"), "--max-steps", "1", "--lora", "--lora-r", "8"])
    assert done.exit_code == 0, done.output[-2000:]
    per_layer = 4 * 8 * (32 + 32) + 8 * (32 + 64) + 8 * (64 + 32)  # q, k, v, out; intermediate; output
    head = (32 * 32 + 32) + (32 * 2 + 2)  # pooler, classifier
    assert f"{2 * per_layer + head:,} trainable of" in " ".join(done.stderr.split())


def test_freezing_keeps_frozen_weights_bit_identical(tiny_encoder, tmp_path):
    data, _ = sentiment(tmp_path)
    out = tmp_path / "frozen"
    done = runner.invoke(app, ["train", "--task", "text-classification", "--model", tiny_encoder, "--train", str(data),
                               "--output", str(out), "--max-steps", "5", "--learning-rate", "1e-2",
                               "--freeze-embeddings", "--train-top-layers", "1"])
    assert done.exit_code == 0, done.output[-2000:]
    before = load_file(Path(tiny_encoder) / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(out / "model.safetensors").items()}  # transformers' names
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in before if k.startswith("encoder.layer.1.") and k.endswith("weight")]
    assert frozen and trained
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    assert all(not torch.equal(before[key], after[key]) for key in trained)
    layer_1 = sum(v.numel() for k, v in before.items() if k.startswith("encoder.layer.1."))
    assert f"{layer_1 + (32 * 32 + 32) + (32 * 2 + 2):,} trainable of" in " ".join(done.stderr.split())  # + pooler, classifier


def test_lora_with_top_layers_adapts_only_those(tiny_encoder, tmp_path):
    data, _ = sentiment(tmp_path)
    out = tmp_path / "top"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(data), output_dir=str(out),
             lora=True, train_top_layers=1, lora_target_modules=["query", "value"], max_steps=2, batch_size=4)
    names = [k for k in load_file(out / "adapter_model.safetensors") if "lora_" in k]
    assert len(names) == 4 and all("layer.1." in k for k in names)  # query and value, A and B
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_undeclared_head_module_is_an_error(tiny_encoder):
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(tiny_encoder)
            self.classifier = torch.nn.Linear(32, 2)
            self.extra = torch.nn.Linear(32, 2)  # a head the task forgot to declare

    model = Model()
    with pytest.raises(AdapterError, match="extra.weight is outside the encoder but not among"):
        apply_lora(model, model.encoder, ["classifier"], r=4, alpha=8, dropout=0.0)


def test_export_and_load_errors(tiny_encoder, tmp_path):
    data, _ = sentiment(tmp_path)
    base = tmp_path / "base"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(data), output_dir=str(tmp_path / "out"),
             lora=True, max_steps=1)
    cli = ["export", str(tmp_path / "out"), "--output", str(base)]
    done = runner.invoke(app, cli)
    assert done.exit_code == 2 and done.stderr.count("\n") == 1 and "pass --merge" in done.stderr
    done = runner.invoke(app, [*cli, "--merge"])
    assert done.exit_code == 0 and (base / "model.safetensors").exists(), done.output[-2000:]
    # an adapter whose base encoder is gone cannot silently become a random model
    manifest_path = tmp_path / "out" / "finetune_kit.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["base_model"] = str(tmp_path / "moved-away")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="base encoder") as raised:
        fk.load(tmp_path / "out")
    assert "moved-away" in str(raised.value)
