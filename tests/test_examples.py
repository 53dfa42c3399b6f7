"""Every YAML task card in examples/ is a valid config, and one trains for real (tiny encoder)."""

import os
from pathlib import Path

import pytest

import finetune_kit as fk
from finetune_kit.config import load_config
from finetune_kit.registry import available_tasks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CARDS = sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("card", CARDS, ids=[c.name for c in CARDS])
def test_task_cards_are_valid(card):
    config = load_config(card)
    assert config.task in available_tasks()


def test_support_tickets_card_trains(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    result = fk.train(EXAMPLES / "support_tickets.yaml", [f"model={tiny_encoder}", f"output_dir={tmp_path / 'm'}",
                                                          "max_steps=2"])
    assert result.global_step == 2 and "test" in result.metrics
    assert os.path.exists(tmp_path / "m" / "model.safetensors")


def test_squad_articles_cuts_and_joins_by_article(tmp_path):
    import json
    import subprocess
    import sys

    def squad(version, titles):
        return {"version": version, "data": [{"title": t, "paragraphs": []} for t in titles]}

    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(squad("1.1", ["A", "B", "C"])), encoding="utf-8")
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps(squad("v2.0", ["X", "Y"])), encoding="utf-8")
    out = tmp_path / "out" / "train.json"
    script = str(EXAMPLES / "squad_articles.py")
    done = subprocess.run([sys.executable, script, str(out), f"{v2}:1-1", f"{v1}:2-3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert [a["title"] for a in document["data"]] == ["X", "B", "C"] and document["version"] == "v2.0"
    done = subprocess.run([sys.executable, script, str(out), f"{v1}:2-4"], capture_output=True, text=True)
    assert done.returncode != 0 and "has articles 1-3" in done.stderr
