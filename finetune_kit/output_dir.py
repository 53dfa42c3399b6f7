"""A run's output directory: one run at a time writes into it, and a run that fails before
it writes anything leaves the directory as it found it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class OutputDirError(ValueError):
    """The output directory cannot be used: an earlier model would be overwritten, another run
    is writing into it, or it cannot be created."""


LOCK_FILE = ".finetune-kit.lock"


@contextmanager
def locked_output_dir(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on a run's output directory (``flock`` on its LOCK_FILE) for the
    whole run, so that a second run into it is refused at once.

    The lock dies with the process, so a killed run never leaves the directory locked. At the
    end the lock file is removed, and so are the directory and the parents the run created, if
    it left nothing in them: a run that fails before its first step leaves the path as it was.
    ``enabled`` is False in all processes but the main one.
    """
    if not enabled:
        yield
        return
    created = _make_directory(output_dir)
    try:
        handle = _lock(output_dir / LOCK_FILE)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        yield
    finally:
        (output_dir / LOCK_FILE).unlink(missing_ok=True)  # before the lock goes, see _lock
        handle.close()
        _remove_if_empty(created)


def _make_directory(path: Path) -> list[Path]:
    """Create ``path`` with its parents; the folders created, deepest first."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output_dir: {path} exists and is not a directory")
    missing = [folder for folder in [path, *path.parents] if not folder.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"output_dir: {path} cannot be created ({exc.strerror})") from None
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something was written there: keep it
            return


def _lock(path: Path) -> Any:
    """The open lock file, locked. A file unlinked by a run that ended after we opened it is
    no lock any more: then the new one is locked instead."""
    while True:
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:  # a folder the user may not write in
            raise OutputDirError(f"output_dir: {path.parent} cannot be written ({exc.strerror}); choose another "
                                 f"directory") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputDirError(
                f"output_dir: {path.parent} is in use by another run{_lock_holder(path)}; wait until it ends or "
                f"choose another directory"
            ) from None
        except OSError as exc:
            handle.close()
            raise OutputDirError(f"output_dir: {path.parent} cannot be locked ({exc.strerror})") from None
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()


def _lock_holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""
