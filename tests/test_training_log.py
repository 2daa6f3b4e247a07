"""The loss curve drawn from a training run: a moving average over the raw losses, labelled, log scale."""
import math

import numpy as np
import pytest
from PIL import Image

from memnet_engine.cli import training_log
from memnet_engine.cli.training_log import LossCurve, moving_average


def test_moving_average_is_the_mean_of_each_window():
    values = np.array([1.0, 3.0, 5.0, 7.0, 100.0])
    np.testing.assert_allclose(moving_average(values, 2), [2.0, 4.0, 6.0, 53.5])
    np.testing.assert_allclose(moving_average(values, 5), [23.2])
    np.testing.assert_allclose(moving_average(values, 1), values)


class Recorder:
    """Stands in for a matplotlib Axes and remembers what was drawn."""

    def __init__(self):
        self.lines, self.calls = [], {}

    def plot(self, xs, ys, **style):
        self.lines.append((np.asarray(xs), np.asarray(ys), style.get("label")))

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.setdefault(name, []).append(args)


def draw(curve, monkeypatch, tmp_path):
    from matplotlib import pyplot as plt
    axes = Recorder()
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda **kw: (real(**kw)[0], axes))
    curve.save_png(str(tmp_path / "loss.png"), "net: training loss", ylabel="loss")
    return axes


def test_raw_points_smoothed_on_a_log_scale_and_labelled(monkeypatch, tmp_path):
    curve = LossCurve()
    losses = 1000 * np.exp(-np.arange(200) / 50)
    for i, loss in enumerate(losses):
        curve.add(i, loss)
    curve.add(200, math.nan)  # a non-finite point is left out, not drawn
    axes = draw(curve, monkeypatch, tmp_path)
    (raw_x, raw_y, raw_label), (avg_x, avg_y, avg_label) = axes.lines
    np.testing.assert_array_equal(raw_y, losses)
    window = 200 // 20
    assert avg_label == f"moving average over {window} iterations" and raw_label == "each iteration"
    np.testing.assert_allclose(avg_y, moving_average(losses, window))
    np.testing.assert_array_equal(avg_x, raw_x[window - 1:])
    assert axes.calls["set_yscale"] == [("log",)] and axes.calls["set_ylabel"] == [("loss (log scale)",)]
    assert axes.calls["set_title"] == [("net: training loss",)]
    with Image.open(tmp_path / "loss.png") as png:
        assert png.size == (800, 450)


def test_few_or_non_positive_losses_are_drawn_as_they_are(monkeypatch, tmp_path):
    curve = LossCurve()
    for i, loss in enumerate([3.0, -1.0, 2.0]):
        curve.add(i, loss)
    axes = draw(curve, monkeypatch, tmp_path)
    assert len(axes.lines) == 1 and "set_yscale" not in axes.calls
    assert axes.calls["set_ylabel"] == [("loss",)]
    assert len(draw(LossCurve(), monkeypatch, tmp_path).lines) == 1  # an empty run still gets its axes


@pytest.mark.parametrize("points, window", [(10, 2), (400, 20), (100000, training_log.MAX_WINDOW)])
def test_window_grows_with_the_run(points, window, monkeypatch, tmp_path):
    curve = LossCurve(max_points=10 ** 6)
    for i in range(points):
        curve.add(i, 1.0 + (i % 7))
    assert draw(curve, monkeypatch, tmp_path).lines[1][2] == f"moving average over {window} iterations"
