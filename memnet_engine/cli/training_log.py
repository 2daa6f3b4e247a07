"""Training logs in Caffe's glog format and the loss curve drawn from them.

Lines look like ``I1124 14:02:03.123456 12345 solver.py:218] Iteration 100, loss = 0.123`` so
that Caffe's ``tools/extra/parse_log.py`` (and ``plot_training_log.py``) read our logs as theirs.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time

import numpy as np

from ..core.atomic import atomic_output

GLOG_LEVELS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
               logging.CRITICAL: "F"}
SMOOTH_FROM = 10  # fewer points are drawn as they are, without a moving average
MAX_WINDOW = 200
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

    def save_png(self, path: str, title: str, ylabel: str = "training loss") -> None:
        """Draw the raw losses and their moving average, on a log scale when every loss is positive;
        write the PNG atomically."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        points = np.array([p for p in self.points if math.isfinite(p[1])], dtype=np.float64).reshape(-1, 2)
        xs, ys = points[:, 0], points[:, 1]
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        try:
            log_scale = len(ys) > 0 and ys.min() > 0
            ax.plot(xs, ys, linewidth=0.8, alpha=0.35 if len(ys) >= SMOOTH_FROM else 1.0, color="tab:blue",
                    marker="." if len(ys) < 50 else None, label="each iteration")
            if len(ys) >= SMOOTH_FROM:
                window = min(MAX_WINDOW, max(2, len(ys) // 20))
                span = (xs[-1] - xs[0]) / (len(xs) - 1) * window
                ax.plot(xs[window - 1:], moving_average(ys, window), linewidth=2, color="tab:orange",
                        label=f"moving average over {span:.0f} iterations")
            if log_scale:
                ax.set_yscale("log")
            if len(ys):
                ax.legend(loc="upper right")
            ax.set_xlabel("iteration")
            ax.set_ylabel(ylabel + (" (log scale)" if log_scale else ""))
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            fig.tight_layout()
            with atomic_output(path) as f:
                fig.savefig(f, format="png")
        finally:
            plt.close(fig)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each run of ``window`` consecutive values (len(values) - window + 1 of them)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window
