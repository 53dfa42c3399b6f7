"""Loading encoders and model directories: Python code shipped in a folder runs only when the
caller passes trust_remote_code; broken folders, tokenizers that are not whole and inputs longer
than the encoder's positions are refused with one line, before anything is written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import finetune_kit as fk
from finetune_kit.api import evaluate, export, export_encoder
from finetune_kit.cli import app
from finetune_kit.config import ConfigError
from finetune_kit.embeddings import EmbeddingError, embed
from finetune_kit.modeling import ModelDirError, load_tokenizer, position_limit
from finetune_kit.saved_models import load_encoder, saved_encoder
from tests.conftest import NEGATIVE, POSITIVE, write_csv

runner = CliRunner()
POSITIONS = 256  # max_position_embeddings of the tiny encoder
FLAG = "--trust-remote-code (trust_remote_code=True)"

REMOTE_CODE = '''from pathlib import Path

Path({marker!r}).write_text("ran", encoding="utf-8")

from transformers import BertConfig, BertModel


class RemoteBertConfig(BertConfig):
    model_type = "remote-bert"


class RemoteBertModel(BertModel):
    config_class = RemoteBertConfig
'''


def ship_remote_code(folder: Path, marker: Path, auto_map: dict[str, str] | None = None) -> Path:
    """Make ``folder``'s config.json ask for the code beside it, code that writes ``marker`` when
    imported (each marker gives the code other bytes, so transformers imports it afresh)."""
    (folder / "remote_bert.py").write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "remote-bert"
    config["auto_map"] = auto_map or {"AutoConfig": "remote_bert.RemoteBertConfig",
                                      "AutoModel": "remote_bert.RemoteBertModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module", autouse=True)
def modules_cache(tmp_path_factory: pytest.TempPathFactory):
    """transformers copies shipped code into its modules cache; keep it out of the home folder."""
    import transformers.dynamic_module_utils as dynamic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf-modules")))
        patch.setattr(sys, "path", list(sys.path))
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", rows)


def train_args(model: str | Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "text-classification", "--model", str(model), "--train", str(data),
            "--output", str(out), "--max-steps", "1", "--batch-size", "8", *extra]


def one_line_error(result) -> str:
    """The message of a command refused as bad input: exit status 2, one line on stderr."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def trained(tiny_encoder: str, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(data), output_dir=str(out),
             max_steps=1, batch_size=8)
    return out


@pytest.fixture(scope="module")
def trained_with_remote_code(tiny_encoder: str, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained with --trust-remote-code on an encoder that ships code: the folder holds
    the code, and its manifest records trust_remote_code: true."""
    root = tmp_path_factory.mktemp("remote")
    encoder = ship_remote_code(Path(shutil.copytree(tiny_encoder, root / "encoder")), root / "ran")
    out = root / "model"
    fk.train(task="text-classification", model=str(encoder), train_file=str(data), output_dir=str(out),
             max_steps=1, batch_size=8, trust_remote_code=True)
    return out


@pytest.fixture()
def remote_model(trained_with_remote_code: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the remote-code model whose code writes this test's own marker file."""
    model = Path(shutil.copytree(trained_with_remote_code, tmp_path / "remote-model"))
    marker = tmp_path / "code-ran"
    (model / "remote_bert.py").write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    return model, marker


# -- remote code ---------------------------------------------------------------------------------


def test_train_runs_an_encoders_shipped_code_only_with_the_flag(tiny_encoder, data, tmp_path):
    encoder = ship_remote_code(Path(shutil.copytree(tiny_encoder, tmp_path / "encoder")), tmp_path / "ran")
    message = one_line_error(runner.invoke(app, train_args(encoder, data, tmp_path / "out")))
    assert str(encoder) in message and FLAG in message and "remote_bert.RemoteBertModel" in message
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()

    result = runner.invoke(app, train_args(encoder, data, tmp_path / "out", "--trust-remote-code"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ran").exists() and (tmp_path / "out" / "model.safetensors").is_file()


def _load(model: Path, tmp_path: Path, **trust: bool) -> None:
    predictor = fk.load(model, **trust)
    assert predictor.predict(["good movie"])[0]["label"] in {"pos", "neg"}


def _evaluate(model: Path, tmp_path: Path, **trust: bool) -> None:
    rows = [{"text": "good movie", "label": "pos"}, {"text": "bad movie", "label": "neg"}]
    metrics = evaluate(model, write_csv(tmp_path / "test.csv", rows), tmp_path / "report", plots=False,
                       bootstrap_resamples=0, **trust)
    assert 0 <= metrics["accuracy"] <= 1


def _export(model: Path, tmp_path: Path, **trust: bool) -> None:
    assert export(model, tmp_path / "exported", **trust) == tmp_path / "exported"
    assert (tmp_path / "exported" / "finetune_kit.json").is_file()


def _export_encoder(model: Path, tmp_path: Path, **trust: bool) -> None:
    assert export_encoder(model, tmp_path / "exported", **trust) == tmp_path / "exported"
    assert (tmp_path / "exported" / "model.safetensors").is_file()


def _saved_encoder(model: Path, tmp_path: Path, **trust: bool) -> None:
    assert saved_encoder(model, **trust).config.hidden_size == 32


def _load_encoder(model: Path, tmp_path: Path, **trust: bool) -> None:  # train --model DIR, embed DIR
    assert load_encoder(str(model), **trust).config.hidden_size == 32


@pytest.mark.parametrize("call", [_load, _evaluate, _export, _export_encoder, _saved_encoder, _load_encoder])
def test_a_model_directory_runs_its_code_only_with_the_flag(call, remote_model, tmp_path):
    """The manifest records the training run's trust_remote_code: true; loading ignores it."""
    model, marker = remote_model
    assert json.loads((model / "finetune_kit.json").read_text(encoding="utf-8"))["config"]["trust_remote_code"]
    with pytest.raises(ModelDirError) as refused:
        call(model, tmp_path)
    assert one_line(refused).startswith(f"{model}: ") and FLAG in str(refused.value)
    assert not marker.exists()
    assert not (tmp_path / "exported").exists() and not (tmp_path / "report").exists()

    call(model, tmp_path, trust_remote_code=True)
    assert marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "export-encoder"])
def test_cli_runs_a_model_directorys_code_only_with_the_flag(command, remote_model, tmp_path):
    model, marker = remote_model
    data = write_csv(tmp_path / "in.csv", [{"text": "good movie", "label": "pos"}])
    out = tmp_path / "out"
    args = {"predict": ["predict", str(model), "--input", str(data), "--output", str(out)],
            "evaluate": ["evaluate", str(model), "--data", str(data), "--output", str(out), "--no-plots",
                         "--bootstrap-resamples", "0"],
            "export": ["export", str(model), "--output", str(out)],
            "export-encoder": ["export", str(model), "--output", str(out), "--encoder"]}[command]
    message = one_line_error(runner.invoke(app, args))
    assert f"error: {model}: " in message and "--trust-remote-code" in message
    assert not marker.exists() and not out.exists()

    result = runner.invoke(app, [*args, "--trust-remote-code"])
    assert result.exit_code == 0, result.output
    assert marker.exists() and out.exists()


def test_code_asked_for_by_the_tokenizer_config_alone_needs_the_flag(tiny_encoder, tmp_path):
    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    path = encoder / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["auto_map"] = {"AutoTokenizer": [None, "remote_tokenizer.RemoteTokenizer"]}
    path.write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"\(remote_tokenizer\.RemoteTokenizer\); pass --trust-remote-code"):
        load_tokenizer(str(encoder))


def test_shipped_config_without_a_model_class_is_one_line(tiny_encoder, tmp_path):
    """With the flag, code that defines a configuration but no model class: transformers lists
    every model type it knows in many lines; here it is one line naming the folder."""
    marker = tmp_path / "ran"
    encoder = ship_remote_code(Path(shutil.copytree(tiny_encoder, tmp_path / "encoder")), marker,
                               auto_map={"AutoConfig": "remote_bert.RemoteBertConfig"})
    with pytest.raises(ModelDirError, match=r"cannot load this model \(Unrecognized configuration class .*"
                                            r"RemoteBertConfig'> for this kind of AutoModel: AutoModel\)$") as refused:
        load_encoder(str(encoder), trust_remote_code=True)
    assert one_line(refused).startswith(f"{encoder}: transformers ")


def test_unknown_model_type_is_one_line(tiny_encoder, data, tmp_path):
    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    config = json.loads((encoder / "config.json").read_text(encoding="utf-8"))
    (encoder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-type"}), encoding="utf-8")
    message = one_line_error(runner.invoke(app, train_args(encoder, data, tmp_path / "out")))
    assert f"{encoder / 'config.json'}: model_type 'no-such-type' is not an architecture transformers" in message
    assert not (tmp_path / "out").exists()

    (encoder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}),
                                         encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"config\.json: has no model_type"):
        load_encoder(str(encoder))


# -- broken folders ------------------------------------------------------------------------------


def cut_in_half(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def break_folder(folder: Path, damage: str) -> str:
    """Damage a model folder; returns the path the error must name."""
    if damage == "empty":
        for item in folder.iterdir():
            item.unlink()
        return f"{folder}: the folder is empty"
    if damage == "truncated-weights":
        cut_in_half(folder / "model.safetensors")
        return f"{folder / 'model.safetensors'}: cannot be read as safetensors weights"
    (folder / "config.json").write_text('{"model_type": "bert", ', encoding="utf-8")
    return f"{folder / 'config.json'}: not valid JSON"


@pytest.mark.parametrize("damage", ["empty", "truncated-weights", "config-not-json"])
@pytest.mark.parametrize("command", ["train", "embed"])
def test_broken_encoder_folder_is_one_line(command, damage, tiny_encoder, data, tmp_path):
    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    expected = break_folder(encoder, damage)
    out = tmp_path / "out"
    args = (train_args(encoder, data, out) if command == "train"
            else ["embed", str(encoder), "--input", str(data), "--output", str(out / "e.npy")])
    assert expected in one_line_error(runner.invoke(app, args))
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated-weights", "config-not-json"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "load"])
def test_broken_model_directory_is_one_line(command, damage, trained, data, tmp_path):
    model = Path(shutil.copytree(trained, tmp_path / "model"))
    expected = break_folder(model, damage)
    out = tmp_path / "out"
    if command == "load":
        with pytest.raises(ModelDirError) as refused:
            fk.load(model)
        assert one_line(refused).startswith(expected)
        return
    args = {"predict": ["predict", str(model), "--input", str(data), "--output", str(out)],
            "evaluate": ["evaluate", str(model), "--data", str(data), "--output", str(out)]}[command]
    assert expected in one_line_error(runner.invoke(app, args))
    assert not out.exists()


# -- tokenizers that are not whole ---------------------------------------------------------------


def test_encoder_without_tokenizer_files_is_refused(tiny_encoder, data, tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_encoder) / name, encoder / name)
    message = one_line_error(runner.invoke(app, train_args(encoder, data, tmp_path / "out")))
    assert f"{encoder}: holds no tokenizer vocabulary (none of tokenizer.json, vocab.txt, vocab.json" in message
    assert not (tmp_path / "out").exists()


def test_tokenizer_with_a_few_tokens_is_refused(tiny_encoder, tmp_path):
    """vocab.txt holds only the special tokens (the fixture's has 279 tokens, as the config's
    vocab_size): transformers loads a 5-token tokenizer that reads every word as [UNK]."""
    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    (encoder / "tokenizer.json").unlink()
    (encoder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"the tokenizer has 5 tokens for an encoder of 279; its vocabulary "
                                            r"files are missing or belong to another model") as refused:
        load_tokenizer(str(encoder))
    assert one_line(refused).startswith(f"{encoder}: ")


# -- inputs longer than the encoder's positions --------------------------------------------------


def tiny_roberta(directory: Path, tiny_encoder: str, max_position_embeddings: int = 34) -> Path:
    """A RoBERTa-style encoder (positions counted after padding_idx=1) with the fixture tokenizer."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=279, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=max_position_embeddings, pad_token_id=1)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(directory)
    return directory


def runs_with(model: torch.nn.Module, length: int) -> bool:
    """Whether the model reads ``length`` tokens (no padding, every id a word's)."""
    try:
        with torch.no_grad():
            model(input_ids=torch.full((1, length), 10))
    except (IndexError, RuntimeError):
        return False
    return True


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_position_limit_is_the_longest_input_the_encoder_reads(kind):
    from transformers import AutoModel, BertConfig, RobertaConfig

    common = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 32, "max_position_embeddings": 40}
    config = BertConfig(**common) if kind == "bert" else RobertaConfig(pad_token_id=1, **common)
    limit = position_limit(config)
    assert limit == {"bert": 40, "roberta": 38}[kind]  # RoBERTa: 40 minus padding_idx + 1
    model = AutoModel.from_config(config).eval()
    assert runs_with(model, limit) and not runs_with(model, limit + 1)


def test_relative_positions_have_no_limit():
    from transformers import AutoModel, DebertaV2Config

    config = DebertaV2Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=40, position_biased_input=False,
                             relative_attention=True)
    assert position_limit(config) is None
    assert runs_with(AutoModel.from_config(config).eval(), 100)


def test_train_refuses_max_length_over_the_positions(tiny_encoder, data, tmp_path):
    message = one_line_error(runner.invoke(app, train_args(tiny_encoder, data, tmp_path / "out",
                                                           "--max-length", "100000")))
    assert message == (f"error: max_length: 100000 is more than the encoder {tiny_encoder} reads ({POSITIONS} "
                       f"tokens); use --max-length {POSITIONS} or less (max_length)")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=rf"max_length: {POSITIONS + 1} is more than"):
        fk.train(task="text-classification", model=tiny_encoder, train_file=str(data),
                 output_dir=str(tmp_path / "out"), max_length=POSITIONS + 1)


def test_train_refuses_the_tasks_default_over_the_positions(tiny_encoder, tmp_path):
    from tests.test_question_answering import toy_squad, write_squad

    data = write_squad(tmp_path / "squad.json", toy_squad())
    with pytest.raises(ConfigError, match=rf"^max_length: 384 \(the task's default\) is more than the encoder "
                                          rf".* \({POSITIONS} tokens\); use --max-length {POSITIONS} or less"):
        fk.train(task="question-answering", model=tiny_encoder, train_file=str(data),
                 output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_train_counts_the_padding_offset_of_roberta_positions(tiny_encoder, data, tmp_path):
    encoder = tiny_roberta(tmp_path / "roberta", tiny_encoder)
    message = one_line_error(runner.invoke(app, train_args(encoder, data, tmp_path / "out", "--max-length", "33")))
    assert "max_length: 33 is more than the encoder" in message and "(32 tokens)" in message


def test_embed_counts_the_padding_offset_of_roberta_positions(tiny_encoder, tmp_path):
    encoder = tiny_roberta(tmp_path / "roberta", tiny_encoder)
    long_text = " ".join(["good movie"] * 40)
    with pytest.raises(EmbeddingError, match=r"max_length: 34 is more than the model reads \(32 tokens\)"):
        embed(str(encoder), [long_text], max_length=34, progress=False)
    assert embed(str(encoder), [long_text], max_length=32, progress=False).shape == (1, 16)


def test_saved_model_with_max_length_over_the_positions_is_refused(trained, tmp_path):
    model = Path(shutil.copytree(trained, tmp_path / "model"))
    manifest = json.loads((model / "finetune_kit.json").read_text(encoding="utf-8"))
    manifest["config"]["max_length"] = 100000
    (model / "finetune_kit.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelDirError) as refused:
        fk.load(model)
    assert one_line(refused) == (f"{model / 'finetune_kit.json'}: max_length 100000 is more than the encoder reads "
                                 f"({POSITIONS} tokens, from its config.json); set max_length to {POSITIONS} or less")
    inputs = write_csv(tmp_path / "in.csv", [{"text": " ".join(["good"] * 600)}])
    message = one_line_error(runner.invoke(app, ["predict", str(model), "--input", str(inputs),
                                                 "--output", str(tmp_path / "p.jsonl")]))
    assert "max_length 100000 is more than the encoder reads" in message
    assert not (tmp_path / "p.jsonl").exists()


def test_model_card_loads_a_model_that_runs_code_only_with_the_flag():
    from finetune_kit.model_card import loading_section

    trusting = "\n".join(loading_section("text-classification", False, "runs/m", runs_code=True))
    assert 'fk.load("runs/m", trust_remote_code=True)' in trusting
    assert "--trust-remote-code" in trusting
    assert "trust_remote_code" not in "\n".join(loading_section("text-classification", False, "runs/m"))
