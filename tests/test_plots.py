"""The cumulative error plot: position and rotation panels, the errors that occur on the axes (no clipping),
labelled thresholds, a title."""
import numpy as np

from evaluation import evaluate


def test_cumulative_errors_plot(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(evaluate, "save_figure", lambda fig, path, dpi=100: figs.append(fig) or path)
    errors = {"a": (0.002, 0.05), "b": (0.3, 1.5), "c": (40.0, 30.0), "d": (np.inf, np.inf)}
    evaluate.plot_cumulative(errors, {"night": ["a", "b"], "snow": ["c", "d"]}, tmp_path / "c.png", title="run X")
    (fig,) = figs
    pos, rot = fig.axes
    assert pos.get_xlabel() == "position error (m)" and rot.get_xlabel() == "rotation error (°)"
    assert pos.get_xlim()[0] < 0.002 and pos.get_xlim()[1] > 40  # the 2 mm and the 40 m errors are on the axis
    assert rot.get_xlim()[0] < 0.05 and rot.get_xlim()[1] > 30
    assert [t.get_text() for t in pos.texts] == ["0.25 m", "0.5 m", "5 m"]
    assert [t.get_text() for t in rot.texts] == ["2 °", "5 °", "10 °"]
    assert fig._suptitle.get_text() == "run X"
    night = pos.get_lines()[0].get_ydata()
    assert night[-1] == 100.0 and pos.get_lines()[1].get_ydata()[-1] == 50.0  # the failed query never counts
