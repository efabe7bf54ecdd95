"""fgsn-loc ablate on a small generated street: two label sources (exact 10-class semantics and a 3-class coarse
version of it) x SSMC, with the P3P-RANSAC baseline; tables, plot, inlier statistics and resumption."""
import json

import h5py
import numpy as np
import pytest

from evaluation import ablate, figures
from fgsn.segment import list_names
from fgsn.utils.config import merge_config
from reconstruction.datasets import load_dataset

COARSE = np.array([2, 0, 0, 1, 1, 1, 2, 1, 0, 2])  # sky, road, sidewalk, wall, window, door, veg, sign, marking, pole


def _coarse_labels(src, dst):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        g.attrs["num_classes"] = 3
        for n in list_names(src):
            g.create_dataset(f"{n}/labels", data=COARSE[f[n]["labels"][()]].astype(np.uint8))
    return dst


def test_inlier_statistics_known_answer():
    res = {"a": {"name": "a", "num_matches": 10, "num_inliers": 5}, "b": {"name": "b", "num_matches": 2, "num_inliers": 0},
           "c": {"name": "c", "num_matches": 40, "num_inliers": 30}}
    s = ablate.inlier_statistics(res, {"a": 20, "b": 8, "c": 60}, ["a", "b", "c", "missing"])
    assert s == {"median_matches": 10.0, "median_inliers": 5.0, "median_inlier_ratio": 0.5,
                 "median_inlier_ratio_raw": 0.25, "few_matches": 1}
    weighted = {k: {**r, "info": {"weight_on_inliers": w}} for (k, r), w in zip(res.items(), (0.9, 0.1, 0.7))}
    assert ablate.inlier_statistics(weighted, {}, ["a", "b", "c"])["median_weight_on_inliers"] == 0.7
    assert ablate.inlier_statistics(res, {}, ["missing"]) == {}
    assert ablate.inlier_statistics({"a": {"name": "a", "num_matches": 0, "num_inliers": 0}}, {}, ["a"]) == {}


def test_bad_network_entries(tmp_path):
    with pytest.raises(ValueError, match="exactly one of"):
        ablate._network_semantics({"name": "x"})
    with pytest.raises(ValueError, match="unknown"):
        ablate._network_semantics({"name": "x", "labels": "l.h5", "clusters": 3})


def test_ablation_end_to_end(semantic_demo, tmp_path):
    data, cache, labels = semantic_demo
    coarse = _coarse_labels(labels, tmp_path / "labels-coarse.h5")
    conf = merge_config(ablate.default_conf, extra={
        "root": str(data), "methods": ["ssmc"],
        "networks": [{"name": "exact", "labels": str(labels), "num_clusters": 10},
                     {"name": "coarse", "labels": str(coarse), "num_clusters": 3}],
        "localizer": {"ransac": {"num_iterations": 1000}}})
    out = tmp_path / "ablate"
    result = ablate.main(conf, out)
    for f in ("table.md", "ablation.json", "recall_vs_clusters.png", "config.yaml", "p3p/eval.json",
              "exact/ssmc/submission.txt", "coarse/ssmc/results.jsonl"):
        assert (out / f).is_file(), f
    table = (out / "table.md").read_text()
    assert "| p3p (no labels) | - |" in table and "| exact | 10 |" in table and "| coarse | 3 |" in table
    assert json.loads((out / "ablation.json").read_text())["methods"]["ssmc"]["exact"]["num_clusters"] == 10
    base = result["baseline"]["inliers"]
    for cond, s in result["methods"]["ssmc"]["exact"]["inliers"].items():
        # exact labels drop only wrong matches: fewer matches, and a higher share of them are inliers
        assert s["median_matches"] < base[cond]["median_matches"]
        assert s["median_inlier_ratio"] >= base[cond]["median_inlier_ratio"] - 0.02, cond
        # the finer labels keep fewer matches than the coarse ones (a coarse class contains several fine ones)
        assert s["median_matches"] <= result["methods"]["ssmc"]["coarse"]["inliers"][cond]["median_matches"]
    assert result["methods"]["ssmc"]["exact"]["eval"]["all"]["recall"][2] >= result["baseline"]["eval"]["all"]["recall"][2] - 13
    # rerunning resumes every run: nothing is recomputed and the numbers are identical
    mtime = (out / "exact" / "ssmc" / "results.jsonl").stat().st_mtime_ns
    again = ablate.main(conf, out)
    assert (out / "exact" / "ssmc" / "results.jsonl").stat().st_mtime_ns == mtime
    assert again["methods"]["ssmc"]["coarse"]["eval"] == result["methods"]["ssmc"]["coarse"]["eval"]
    # per-query figures of a semantic run (one per condition); the baseline has no labels to draw
    ds = load_dataset("cmu", data)
    pngs = figures.main(ds, out / "exact" / "ssmc", per_condition=1)
    assert sorted(p.parent.name for p in pngs) == ["dusk", "night"] and all(p.stat().st_size > 10000 for p in pngs)
    with pytest.raises(ValueError, match="has no labels"):
        figures.main(ds, out / "p3p")


def test_killed_and_resumed_ablation_matches_uninterrupted(semantic_demo, tmp_path):
    """``fgsn-loc ablate`` killed with SIGKILL partway through its second run and started again (issue 13): the
    same tables, numbers and submissions as an uninterrupted ablation; the finished baseline run is not touched
    and the queries localized before the kill are kept, not localized again; no partial file is left."""
    from omegaconf import OmegaConf

    from tests.killing import assert_clean, cli, kill_when, run_cli

    data, _, labels = semantic_demo
    extra = {"root": str(data), "methods": ["ssmc"], "networks": [{"name": "exact", "labels": str(labels),
                                                                   "num_clusters": 10}],
             "localizer": {"ransac": {"num_iterations": 1000}}}
    ref = tmp_path / "reference"
    expected = ablate.main(merge_config(ablate.default_conf, extra=extra), ref)
    OmegaConf.save(OmegaConf.create(extra), tmp_path / "ablate.yaml")
    out = tmp_path / "killed"
    command = cli("ablate", tmp_path / "ablate.yaml", "--out", out)
    second = out / "exact" / "ssmc" / "results.jsonl"
    kill_when(command, lambda: len(second.read_text().splitlines()) >= 2, tmp_path / "killed.log")
    kept = [ln for ln in second.read_text().splitlines(keepends=True) if ln.endswith("\n")]
    n = len(load_dataset("cmu", data).queries)
    assert 2 <= len(kept) < n and not (out / "ablation.json").exists()
    baseline_mtime = (out / "p3p" / "results.jsonl").stat().st_mtime_ns

    run_cli(command, tmp_path / "resumed.log")

    def untimed(x):  # every number but the wall-clock times
        if isinstance(x, dict):
            return {k: untimed(v) for k, v in x.items() if k != "median_time_s"}
        return [untimed(v) for v in x] if isinstance(x, list) else x

    assert untimed(json.loads((out / "ablation.json").read_text())) == untimed(json.loads(json.dumps(expected)))
    assert (out / "table.md").read_text() == (ref / "table.md").read_text()
    for run in ("p3p", "exact/ssmc"):
        assert (out / run / "submission.txt").read_text() == (ref / run / "submission.txt").read_text(), run
        names = [json.loads(ln)["name"] for ln in (out / run / "results.jsonl").read_text().splitlines()]
        assert len(names) == len(set(names)) == n, run  # every query once
    assert (out / "p3p" / "results.jsonl").stat().st_mtime_ns == baseline_mtime
    assert second.read_text().splitlines(keepends=True)[:len(kept)] == kept
    assert_clean(out)
