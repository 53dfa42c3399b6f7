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


# -- accelerate launch configs -----------------------------------------------------------------

ACCELERATE_CONFIGS = sorted((EXAMPLES / "accelerate").glob("*.yaml"))


def launcher_arguments(config_file: Path):
    """What ``accelerate launch --config_file CONFIG -m finetune_kit.cli train`` makes of a config
    (without starting anything): the launcher's arguments and the config it read."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "finetune_kit.cli", "train"])
    args, config, _ = _validate_launch_command(args)
    return args, config


def plugin_from_launcher(args, config):
    """The DeepSpeed or FSDP plugin the launched processes would build from their environment."""
    from unittest import mock

    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(config.deepspeed_config)  # as the launcher does
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            return DeepSpeedPlugin()
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        return FullyShardedDataParallelPlugin() if args.use_fsdp else None


def test_the_four_accelerate_configs_are_there():
    assert [c.name for c in ACCELERATE_CONFIGS] == ["cpu_2proc.yaml", "deepspeed_zero2.yaml", "fsdp.yaml",
                                                    "multi_gpu.yaml"]


@pytest.mark.parametrize("config_file", ACCELERATE_CONFIGS, ids=[c.name for c in ACCELERATE_CONFIGS])
def test_accelerate_configs_are_accepted(config_file):
    """Every key is one accelerate knows (it ignores unknown nested keys silently, so those are
    checked against the launcher's options), and each file starts with a comment on its use."""
    from accelerate.commands.launch import launch_command_parser

    assert config_file.read_text(encoding="utf-8").startswith("# ")
    args, config = launcher_arguments(config_file)  # unknown top-level keys fail here
    options = set(vars(launch_command_parser().parse_args(["script.py"])))
    nested = {k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config} | set(config.deepspeed_config)
    assert nested <= options, nested - options
    assert config.num_machines == 1 and args.num_processes == 2
    plugin_from_launcher(args, config)  # bad values fail here


def test_deepspeed_config_leaves_accumulation_to_finetune_kit():
    args, config = launcher_arguments(EXAMPLES / "accelerate" / "deepspeed_zero2.yaml")
    plugin = plugin_from_launcher(args, config)
    assert plugin.zero_stage == 2
    assert plugin.is_auto("gradient_accumulation_steps") and plugin.is_auto("train_micro_batch_size_per_gpu")
    assert plugin.get_value("gradient_clipping") == 1.0


def test_fsdp_config_shards_each_bert_layer(tiny_encoder):
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from finetune_kit_tasks.text_classification import SequenceClassifier
    from transformers import AutoModel

    args, config = launcher_arguments(EXAMPLES / "accelerate" / "fsdp.yaml")
    plugin = plugin_from_launcher(args, config)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    model = SequenceClassifier(AutoModel.from_pretrained(tiny_encoder), num_labels=2)
    wraps = fsdp2_prepare_auto_wrap_policy(plugin, model)
    assert [type(m).__name__ for m in model.modules() if wraps(m)] == ["BertLayer", "BertLayer"]
