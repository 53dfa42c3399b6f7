"""``finetune-kit push``: a trained model directory, with its card and report, to the Hugging Face Hub.

What goes up is decided here, file by file (``upload_files``), and handed to huggingface_hub as
its allow-list, so the list that is tested is the list that is uploaded: the model (weights or
LoRA adapter, config.json, code shipped with the model), the tokenizer, finetune_kit.json, the
card (README.md), the report (report.html, report.md, report.json, metrics.json, plots/) and
train_log.jsonl (the training curves, which ``evaluate`` reads into its report). Nothing else:
not checkpoints/, evaluation/, hidden files (the run's lock, folders being written) nor any file
of another name. The token is huggingface_hub's own: HF_TOKEN or ``hf auth login``.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .hub import HubUnreachableError, hub_reachable, is_repo_id, unreachable_reason
from .modeling import MANIFEST, ModelDirError, one_line, read_manifest

# Top-level files uploaded by name.
UPLOAD_NAMES = frozenset({
    # the model
    "config.json", "generation_config.json", "adapter_config.json", "model.safetensors.index.json", MANIFEST,
    # the tokenizer
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "chat_template.jinja",
    # the card, the report and the training log
    "README.md", "report.html", "report.md", "report.json", "metrics.json", "train_log.jsonl",
})
# Top-level files uploaded by their ending: weights (an ONNX export's graph, and its weights file
# beside it when large), SentencePiece and tiktoken vocabularies, and the Python code of a model
# that ships its own architecture (trust_remote_code).
UPLOAD_SUFFIXES = (".safetensors", ".onnx", ".onnx.data", ".model", ".tiktoken", ".py")
# Subfolders uploaded, with the endings of the files taken from them.
UPLOAD_FOLDERS = {"plots": (".png", ".svg")}


class PushError(ValueError):
    """The model directory or the repository cannot be pushed; the message says why."""


def upload_files(model_dir: str | Path) -> list[str]:
    """The files of ``model_dir`` that ``push`` uploads, as sorted paths relative to it."""
    model_dir = Path(model_dir)
    files = [p.name for p in model_dir.iterdir() if p.is_file() and is_uploaded(p.name)]
    for folder, suffixes in UPLOAD_FOLDERS.items():
        if (model_dir / folder).is_dir():
            files += [f"{folder}/{p.name}" for p in (model_dir / folder).iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.name.endswith(suffixes)]
    return sorted(files)


def is_uploaded(name: str) -> bool:
    """True for a top-level file name that belongs on the Hub."""
    return not name.startswith(".") and (name in UPLOAD_NAMES or name.endswith(UPLOAD_SUFFIXES))


def check_push(model_dir: Path, repo_id: str) -> None:
    """Refuse, in one line and before any upload, a folder that is not a finetune-kit model
    directory, a malformed repository id, and a Hub that cannot be reached."""
    if not model_dir.is_dir():
        raise PushError(f"{model_dir}: not a directory; give a model directory written by `finetune-kit train`")
    if not (model_dir / MANIFEST).is_file():
        raise PushError(f"{model_dir}: has no {MANIFEST}; it is not a finetune-kit model directory (give one written "
                        f"by `finetune-kit train`)")
    if not is_repo_id(repo_id):
        raise PushError(f"--repo-id '{repo_id}': not a Hub repository id; give NAME or ORGANISATION/NAME (letters, "
                        f"digits, '-', '_', '.')")
    if not hub_reachable():
        raise HubUnreachableError(f"cannot push to '{repo_id}': {unreachable_reason()}; push from a machine that "
                                  f"reaches the Hub (and unset HF_HUB_OFFLINE)")


def push(model_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
         commit_message: str | None = None) -> str:
    """Create the model repository ``repo_id`` if needed (``private`` when new), the branch
    ``revision`` if it is not there, and upload ``upload_files(model_dir)`` in one commit.
    Returns the commit's URL."""
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    check_push(model_dir, repo_id)
    try:
        task = read_manifest(model_dir).task
    except ModelDirError as exc:
        raise PushError(str(exc)) from None
    files = upload_files(model_dir)
    api = HfApi()
    with hub_errors(repo_id):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="model", folder_path=str(model_dir), revision=revision,
            commit_message=commit_message or f"Upload {task} model (finetune-kit)",
            allow_patterns=[glob.escape(name) for name in files],
        )
    return str(getattr(commit, "commit_url", commit))


@contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """Turn what huggingface_hub raises (no token, a refused one, missing rights, a network
    failure) into a one-line ``PushError``."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    try:
        yield
    except (HfHubHTTPError, HTTPError, OSError, ValueError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = ("; log in with `hf auth login` or set HF_TOKEN to a token with write access"
                if status in (401, 403) else "")
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PushError(f"pushing to '{repo_id}' failed: {one_line(first_line)}{hint}") from None
