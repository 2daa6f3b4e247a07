"""Training logs in Caffe's glog format and the loss curve drawn from them.

Lines look like ``I1124 14:02:03.123456 12345 solver.py:218] Iteration 100, loss = 0.123`` so
that Caffe's ``tools/extra/parse_log.py`` (and ``plot_training_log.py``) read our logs as theirs.
"""
from __future__ import annotations

import logging
import os
import re
import time

from ..core.atomic import atomic_output

GLOG_LEVELS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
               logging.CRITICAL: "F"}
DISPLAY_LINE = re.compile(r"Iteration (\d+) \(.*\), loss = ([-+]?(?:[\d.]+(?:[eE][-+]?\d+)?|inf|nan))")


class GlogFormatter(logging.Formatter):
    """``Lmmdd hh:mm:ss.uuuuuu  pid file:line] message``, as glog writes it (on every line of a message)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(record.created))
        micros = int(round((record.created % 1) * 1e6)) % 1000000
        level = GLOG_LEVELS.get(record.levelno, "I")
        prefix = f"{level}{stamp}.{micros:06d} {record.process:>5} {record.filename}:{record.lineno}] "
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        # every line gets the prefix (glog prefixes only the first), so parse_log.py can date each one
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def read_logged_losses(path: str, before: int) -> list[tuple[int, float]]:
    """(iteration, smoothed loss) of every display line in a log, for iterations < ``before``."""
    if not os.path.isfile(path):
        return []
    points = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = DISPLAY_LINE.search(line)
            if match and int(match.group(1)) < before:
                points.append((int(match.group(1)), float(match.group(2))))
    return points


class LossCurve:
    """Per-iteration losses in bounded memory: past ``max_points`` neighbours are averaged in pairs."""

    def __init__(self, max_points: int = 20000):
        self.max_points = max_points
        self.points: list[tuple[float, float]] = []

    def add(self, iteration: float, loss: float) -> None:
        self.points.append((float(iteration), float(loss)))
        if len(self.points) > self.max_points:
            pairs = zip(self.points[0::2], self.points[1::2])
            merged = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in pairs]
            self.points = merged + self.points[len(merged) * 2:]

    def save_png(self, path: str, title: str) -> None:
        """Draw the curve (log scale when every loss is positive) and write it atomically."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        try:
            if self.points:
                xs, ys = zip(*self.points)
                ax.plot(xs, ys, linewidth=1, marker="." if len(xs) < 50 else None)
                if min(ys) > 0:
                    ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel("training loss")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            with atomic_output(path) as f:
                fig.savefig(f, format="png")
        finally:
            plt.close(fig)
