"""Reaching the Hugging Face Hub: a quick reachability check so that a machine without a
network gets a clear error at once instead of minutes of retries, and finetune-kit models named
by their Hub id (downloaded, or read from the local cache when the Hub cannot be reached)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

MANIFEST = "finetune_kit.json"  # as modeling.MANIFEST (modeling imports this module)
# Never part of a model: what a run keeps beside it (resumable checkpoints, later evaluations).
SNAPSHOT_IGNORE = ("checkpoints/*", "evaluation/*")

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class HubUnreachableError(RuntimeError):
    """The Hub is needed for a name that is not on disk, and it cannot be reached."""


def offline_mode() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the Hub endpoint opens within ``timeout`` seconds."""
    if offline_mode():
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_reason() -> str:
    """Why the Hub cannot be used, for error messages."""
    return "offline mode is set (HF_HUB_OFFLINE)" if offline_mode() else f"{hub_endpoint()} cannot be reached"


def require_hub(what: str, name: str, suggestion: str) -> None:
    """Raise a one-line error when ``name`` must come from the Hub and the Hub is unreachable."""
    if hub_reachable():
        return
    raise HubUnreachableError(
        f"{what} '{name}' is not a local path and is not in the local cache, and {unreachable_reason()}; {suggestion}"
    )


def is_repo_id(name: str) -> bool:
    """True when ``name`` is shaped like a Hub repository id (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def finetune_kit_snapshot(repo_id: str) -> Path | None:
    """The local folder of the Hub model ``repo_id`` (its main branch) when it is a finetune-kit
    model, i.e. holds finetune_kit.json: downloaded when the Hub answers, else read from the local
    cache. None when it is not one: not a repository id, a model without finetune_kit.json (a plain
    transformers model), no such repository, or nothing cached while the Hub cannot be reached."""
    if not is_repo_id(repo_id):
        return None
    from huggingface_hub import constants

    return _snapshot(repo_id, hub_reachable(), str(constants.HF_HUB_CACHE))


@lru_cache(maxsize=64)
def _snapshot(repo_id: str, online: bool, cache_dir: str) -> Path | None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, IncompleteSnapshotError

    try:
        hf_hub_download(repo_id, MANIFEST, cache_dir=cache_dir, local_files_only=not online)
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError):  # not there, or not a finetune-kit model
        return None
    try:
        folder = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=not online,
                                   ignore_patterns=list(SNAPSHOT_IGNORE))
    except IncompleteSnapshotError as exc:
        raise HubUnreachableError(f"model '{repo_id}': its copy in the local cache ({exc.snapshot_path}) is "
                                  f"incomplete, and {unreachable_reason()}; download it again with a network") from None
    return Path(folder)


def in_hub_cache(repo_id: str) -> bool:
    """True when the local Hub cache holds a model of that id (its config.json)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def evaluation_dir(model: str | Path, data_name: str) -> Path:
    """Where an evaluation report goes by default: MODEL_DIR/evaluation/<data name> for a local
    model directory; for a Hub id ORG/NAME, evaluation/ORG--NAME/<data name> in the current
    directory (never inside the Hub cache, nor a folder named like the id)."""
    if Path(model).expanduser().is_dir() or not is_repo_id(str(model)):
        return Path(model).expanduser() / "evaluation" / data_name
    return Path("evaluation") / str(model).replace("/", "--") / data_name
