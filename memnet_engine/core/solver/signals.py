"""Signals during training, as ``caffe train`` handles them: Ctrl-C snapshots and stops, SIGHUP snapshots."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def signal_handlers(solver, enabled: bool) -> Iterator[None]:
    """While active (main thread only), SIGINT asks ``solver`` to snapshot and stop after the current
    iteration (a second SIGINT aborts with KeyboardInterrupt) and SIGHUP asks for a snapshot."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts = 0

    def on_sigint(signum, frame) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        log.warning("Interrupted: snapshotting and stopping after this iteration (Ctrl-C again to abort)")
        solver.request_stop()

    def on_sighup(signum, frame) -> None:
        log.info("SIGHUP: snapshotting after this iteration")
        solver.request_snapshot()

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
