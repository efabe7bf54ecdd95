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


def test_recall_vs_clusters_single_k(tmp_path, monkeypatch):
    """One cluster count and four columns (three conditions and all): four markers apart, the K value as the
    tick."""
    from evaluation import ablate

    figs = []
    monkeypatch.setattr(ablate, "save_figure", lambda fig, path, dpi=100: figs.append(fig) or path)

    def ev(r):
        return {"conditions": {c: {"recall": [r, r, r]} for c in ("night", "snow", "dusk")}, "groups": {},
                "all": {"recall": [r, r, r]}}

    ablation = {"baseline": {"method": "p3p", "eval": ev(50.0)},
                "methods": {"gsmc": {"fgsn-k20": {"num_clusters": 20, "eval": ev(70.0)}}}}
    ablate.plot_recall_vs_clusters(ablation, "conditions", tmp_path / "r.png")
    (ax,) = figs[0].axes
    xs = [line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(xs) == 4 and len(set(np.round(xs, 6))) == 4 and all(abs(np.log10(x / 20)) <= 0.03 for x in xs)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["20"]
