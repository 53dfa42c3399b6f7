"""Reaching the Hugging Face Hub: a quick reachability check so that a machine without a
network gets a clear error at once instead of minutes of retries."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

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


def require_hub(what: str, name: str, suggestion: str) -> None:
    """Raise a one-line error when ``name`` must come from the Hub and the Hub is unreachable."""
    if hub_reachable():
        return
    reason = "offline mode is set (HF_HUB_OFFLINE)" if offline_mode() else f"{hub_endpoint()} cannot be reached"
    raise HubUnreachableError(
        f"{what} '{name}' is not a local path and is not in the local cache, and {reason}; {suggestion}"
    )
