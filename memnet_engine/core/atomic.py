"""Atomic file writes: write beside the target, then rename over it, so readers never see half a file.

Temporary files are named ``.<name>.<8 random characters>.tmp<extension>`` in the target's
folder; a process killed while writing leaves one behind, which ``remove_stale_temps`` (run at
the next start) deletes.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import BinaryIO, Iterator

TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.[a-z0-9_]{8}\.tmp(?P<ext>\.[^.]*)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(path: str) -> str:
    """A new, empty temporary file next to ``path``, with its extension and the usual permissions
    (0666 minus the umask; mkstemp alone makes 0600 files)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def temp_target(name: str) -> "str | None":
    """The file name a temporary file named ``name`` was written for, or None if it is not one."""
    match = TEMP_NAME.match(name)
    return None if match is None else match["base"] + (match["ext"] or "")


def remove_stale_temps(folder: str) -> list[str]:
    """Delete the temporary files that killed writers left in ``folder``; returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if temp_target(name) is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


def fsync_folder(folder: str) -> None:
    """Make renames in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the extension of ``path`` (writers that pick a format from it work).
    """
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """A binary file object for ``path``, flushed to disk and renamed onto ``path`` on success only."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
