"""Writing files: whole or not at all, through symbolic links, into streams as they are, and
with one-line errors (``OutputWriteError``) that name the file and the reason."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputWriteError(OSError):
    """A file that cannot be written (a directory in its place, no permission, a full disk); the
    message names the file and the reason the system gave."""


def _cannot_write(path: Path, reason: str) -> OutputWriteError:
    return OutputWriteError(f"{path}: cannot be written ({reason}); choose another location")


def _file_kind(path: Path) -> str:
    """What ``path`` is, following symbolic links: missing, file, directory, stream (a character
    device or a FIFO: a terminal, /dev/null, a pipe), or other (a socket, a block device)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:  # a loop of links, a folder that cannot be searched
        raise _cannot_write(path, exc.strerror or str(exc)) from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "stream" if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) else "other"


def _output_file_kind(path: Path) -> str:
    """``_file_kind`` of a path a file is to be written to; raises ``OutputWriteError`` when it
    cannot be: a directory or a socket is there, a folder above it is a file, or that folder
    cannot be written to."""
    kind = _file_kind(path)
    if kind == "directory":
        raise OutputWriteError(f"{path}: is a directory; give a file name")
    if kind == "other":
        raise OutputWriteError(f"{path}: is a socket or a block device, not a file; give a file name")
    if kind != "stream":
        _check_folder(Path(os.path.realpath(path)).parent, path)
    return kind


def check_output_file(path: str | Path) -> None:
    """Fail now, before any work, when ``path`` cannot be written as a file (``OutputWriteError``)."""
    _output_file_kind(Path(path))


def check_output_directory(path: str | Path) -> None:
    """Fail now, before any work, when files cannot be written into the folder ``path``."""
    path = Path(path)
    if _file_kind(path) not in ("missing", "directory"):
        raise OutputWriteError(f"{path}: exists and is not a directory; give a directory")
    _check_folder(Path(os.path.realpath(path)), path)


def _check_folder(folder: Path, path: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a directory one can write in."""
    existing = next(p for p in (folder, *folder.parents) if _file_kind(p) != "missing")
    if _file_kind(existing) != "directory":
        raise _cannot_write(path, f"{existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _cannot_write(path, f"{existing} is not writable")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash leaves the old content or the new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for binary content (images).

    A symbolic link stays a link: the file it points to gets the content. A character device or
    FIFO (/dev/null, a terminal or pipe behind /dev/stdout, a named pipe) is written directly,
    since renaming a file onto it would replace the device itself. A failure raises
    ``OutputWriteError`` and leaves no temporary file behind.
    """
    path = Path(path)
    try:
        if _output_file_kind(path) == "stream":
            with open(path, "wb") as handle:
                handle.write(data)
        else:
            _replace_file(Path(os.path.realpath(path)), data)
    except OutputWriteError:
        raise
    except OSError as exc:
        raise _cannot_write(path, exc.strerror or str(exc)) from None


def _replace_file(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
