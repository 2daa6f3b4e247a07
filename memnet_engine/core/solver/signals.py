"""Signals during training, as ``caffe train`` handles them (its -sigint_effect / -sighup_effect), for more signals.

Each handled signal has an effect: ``stop`` (snapshot and stop after the current iteration),
``snapshot`` (snapshot after it and go on) or ``none`` (ignored).  By default SIGINT (Ctrl-C),
SIGTERM (what schedulers send before killing a job) and SIGUSR1 (what Slurm's ``--signal`` sends
ahead of time) stop, and SIGHUP snapshots.  A second stopping signal aborts at once with
KeyboardInterrupt (``args[0]`` names the signal), held back while a snapshot pair or the loss plot is
being written (``deferred_signals``).
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP, SNAPSHOT, NONE = "stop", "snapshot", "none"
EFFECTS = (STOP, SNAPSHOT, NONE)
DEFAULT_EFFECTS = {"SIGINT": STOP, "SIGTERM": STOP, "SIGUSR1": STOP, "SIGHUP": SNAPSHOT}


def check_effects(effects: "dict[str, str]") -> None:
    for name, effect in effects.items():
        if effect not in EFFECTS:
            raise ValueError(f"{name}: unknown signal effect {effect!r} (use {', '.join(EFFECTS)})")


@contextmanager
def signal_handlers(solver, enabled: bool) -> Iterator[None]:
    """While active (main thread only), the signals of ``solver.signal_effects`` ask ``solver`` to stop
    (``request_stop``, recording the signal in ``solver.stop_signal``) or to snapshot.

    The handler logs nothing itself: it may run in the middle of a log record being written (a second
    write into the same file object from the handler is a RuntimeError), so its messages wait in
    ``solver.signal_notes`` until the solver takes the request at the end of the iteration."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    check_effects(solver.signal_effects)
    stops = 0

    def on_signal(signum, frame) -> None:
        nonlocal stops
        name = signal.Signals(signum).name
        effect = solver.signal_effects.get(name, NONE)
        if effect == NONE:
            solver.signal_notes.append((logging.INFO, f"{name} ignored (its effect is none)"))
        elif effect == SNAPSHOT:
            solver.signal_notes.append((logging.INFO, f"{name}: snapshotting after this iteration"))
            solver.request_snapshot()
        else:
            stops += 1
            if stops > 1:
                raise KeyboardInterrupt(name)
            again = "Ctrl-C" if name == "SIGINT" else name
            solver.signal_notes.append((logging.WARNING, f"{'Interrupted' if name == 'SIGINT' else name}: "
                                        f"snapshotting and stopping after this iteration ({again} again to abort)"))
            solver.stop_signal = name
            solver.request_stop()

    previous = {}
    for name in solver.signal_effects:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, on_signal)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold the signals of ``DEFAULT_EFFECTS`` while the block runs (main thread only), then act on them as the
    handlers in place before would: for work a second Ctrl-C must not cut in half (a library's lazy set-up,
    whose half-built objects complain when collected)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    numbers = [getattr(signal, name) for name in DEFAULT_EFFECTS if hasattr(signal, name)]
    previous = {number: signal.signal(number, lambda signum, frame: pending.append(signum)) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in pending:
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)
