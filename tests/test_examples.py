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
