"""Snapshot pairs: the .caffemodel and .solverstate of one iteration appear together or not at all.

``write_pair`` writes both to temporary files beside their names and fsyncs them, renames the
caffemodel into place, then the solverstate (which records the caffemodel's name, as Caffe's
does, and its SHA-256), and fsyncs the folder.  On a write error (a full disk...) the temporary
files are removed, the previous pairs are untouched and a SnapshotError names the file and the
bytes it needed.  A process killed between the two renames leaves the new caffemodel and the
complete temporary solverstate: ``recover`` (run at the next start) renames that solverstate
into place when its recorded digest is the caffemodel's, and deletes every other temporary
snapshot file.  ``prune`` keeps the newest pairs of a prefix (``--keep-snapshots``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass

from ..atomic import fsync_folder, temp_path_for, temp_target
from ..errors import MemnetError
from ..integrity import peek_seal, unseal
from ..memory import human

EXTENSIONS = (".caffemodel", ".solverstate")
log = logging.getLogger(__name__)


class SnapshotError(MemnetError):
    """A snapshot could not be written (the previous snapshots are intact)."""


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_pair(model: str, model_bytes: bytes, state: str, state_bytes: bytes) -> None:
    """Write a snapshot pair as described in the module docstring."""
    temps: dict[str, str] = {}
    target = model
    try:
        for target, data in ((model, model_bytes), (state, state_bytes)):
            temps[target] = temp_path_for(target)
            _write_file(temps[target], data)
        for target in (model, state):
            os.replace(temps[target], target)
            del temps[target]
            fsync_folder(os.path.dirname(os.path.abspath(target)))
    except OSError as ex:
        needed = len(model_bytes) + len(state_bytes)
        folder = os.path.dirname(os.path.abspath(target))
        free = shutil.disk_usage(folder).free if os.path.isdir(folder) else None
        room = f"; {human(free)} free in {folder}" if free is not None else ""
        raise SnapshotError(f"cannot write snapshot {target}: {ex.strerror or ex} (the pair needs {human(needed)}"
                            f"{room}); the previous snapshots are intact") from None
    finally:
        if model in temps:  # else the caffemodel is in place: its complete solverstate is left for ``recover``
            for tmp in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


@dataclass
class Recovery:
    """What ``recover`` did in a snapshot folder."""

    completed: list[str]   # solverstates renamed into place after a kill between the renames
    removed: list[str]     # temporary files deleted


def recover(prefix: str) -> Recovery:
    """Finish or remove (and log) the snapshot pairs of ``prefix`` that a killed process left half-made."""
    folder = os.path.dirname(os.path.abspath(prefix))
    base = os.path.basename(prefix)
    done = Recovery([], [])
    if not os.path.isdir(folder):
        return done
    own = re.compile(re.escape(base) + r"_iter_\d+(" + "|".join(map(re.escape, EXTENSIONS)) + ")$")
    for name in sorted(os.listdir(folder)):
        target = temp_target(name)
        if target is None or not own.match(target):
            continue
        path, final = os.path.join(folder, name), os.path.join(folder, target)
        if target.endswith(".solverstate") and _completes_pair(path, final):
            os.replace(path, final)
            done.completed.append(final)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            done.removed.append(name)
    if done.completed:
        fsync_folder(folder)
    for path in done.completed:
        log.info("Completed the snapshot pair of %s (a run was stopped between writing its two files)", path)
    if done.removed:
        log.info("Removed %d temporary snapshot file(s) left by a stopped run in %s", len(done.removed), folder)
    return done


def _completes_pair(temp_state: str, final_state: str) -> bool:
    """True when ``temp_state`` is whole and was written with the caffemodel now beside it."""
    model = final_state[:-len(".solverstate")] + ".caffemodel"
    model_seal = peek_seal(model)
    try:
        with open(temp_state, "rb") as f:
            state_seal = unseal(f.read())
    except OSError:
        return False
    return model_seal is not None and state_seal.sealed and state_seal.intact and \
        state_seal.paired == model_seal.digest


def snapshot_iterations(prefix: str) -> dict[int, set[str]]:
    """Iteration -> the extensions present, for the snapshots of ``prefix``."""
    folder = os.path.dirname(os.path.abspath(prefix))
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"_iter_(\d+)(\.caffemodel|\.solverstate)$")
    found: dict[int, set[str]] = {}
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.match(name)
        if match:
            found.setdefault(int(match[1]), set()).add(match[2])
    return found


def prune(prefix: str, keep: int) -> list[str]:
    """Keep the newest ``keep`` complete pairs of ``prefix``; delete its older snapshot files (each
    solverstate before its caffemodel).  Returns the deleted paths."""
    found = snapshot_iterations(prefix)
    pairs = sorted(i for i, exts in found.items() if exts == set(EXTENSIONS))
    if keep <= 0 or len(pairs) <= keep:
        return []
    oldest_kept = pairs[-keep]
    removed = []
    for iteration in sorted(i for i in found if i < oldest_kept):
        for ext in (".solverstate", ".caffemodel"):
            path = f"{prefix}_iter_{iteration}{ext}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
    return removed
