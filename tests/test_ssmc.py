"""SSMC (localization.ssmc) on known label arrays, and both semantic filters (SSMC, GSMC) end to end on a small
generated demo street with its ground-truth semantics as the label source."""
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation import evaluate
from fgsn.utils.config import merge_config
from localization import localize
from localization.ssmc import consistent_matches
from reconstruction import build_map, synthetic
from reconstruction.datasets import load_dataset
from reconstruction.semantics import labels_from_pngs

DATA_OVERRIDES = ["camera.width=320", "camera.height=240", "camera.fx=250", "camera.fy=250", "trajectory.n_database=14", "trajectory.n_queries=3", "conditions=[dusk,night]",
                  "write_semantics=true", "write_correspondences=false"]


class TestConsistentMatches:
    def test_known_answer(self):
        q = np.array([1, 2, 3, 3, 0, 5, 7])
        p = np.array([1, 2, 4, -1, 0, 5, 7])
        assert consistent_matches(q, p).tolist() == [True, True, False, False, True, True, True]
        assert consistent_matches(q, p, keep_unlabelled=True).tolist() == [True, True, False, True, True, True, True]
        assert consistent_matches(q, p, ignore_labels=[5, 0]).tolist() == [True, True, False, False, False, False, True]
        # a label ignored on either side drops the match, even when the other side differs
        assert consistent_matches(np.array([4, 1]), np.array([1, 4]), ignore_labels=[4]).tolist() == [False, False]

    def test_empty_and_shapes(self):
        assert consistent_matches(np.zeros(0, int), np.zeros(0, int)).shape == (0,)
        with pytest.raises(ValueError, match="point_labels"):
            consistent_matches(np.zeros(3, int), np.zeros(4, int))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo street (14 database images, 3 queries x 2 conditions), its map, and a label file made from
    the generator's ground-truth semantic PNGs (10 classes)."""
    root = tmp_path_factory.mktemp("semantic-demo")
    data = root / "data"
    synthetic.main(merge_config(synthetic.default_conf, overrides=DATA_OVERRIDES), data)
    ds = load_dataset("cmu", data)
    build_map.main(merge_config(build_map.default_conf), ds, "slice2", ds.maps["slice2"].model_path, root / "cache")
    items = [(r.key, data / r.map_id / "semantics" / kind / Path(r.name).with_suffix(".png"))
             for kind, recs in (("database", ds.database), ("query", ds.queries)) for r in recs]
    labels = labels_from_pngs(items, root / "labels-gt.h5", num_classes=len(synthetic.CLASSES))
    return root, data, labels


def _run(demo, method, *overrides):
    root, data, labels = demo
    ds = load_dataset("cmu", data)
    semantic = ["localizer.semantics.source=labels", f"localizer.semantics.labels={labels}"] if method != "p3p" else []
    conf = localize.build_conf(method, overrides=[f"cache_dir={root / 'cache'}", *semantic, *overrides])
    out = root / f"run-{method}"
    sub = localize.main(conf, ds, out, overwrite=True)
    records = {json.loads(line)["name"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    return ds, evaluate.main(ds, sub, out), records


def test_ssmc_end_to_end(demo):
    ds, report, records = _run(demo, "ssmc")
    _, base, base_records = _run(demo, "p3p")
    assert report["all"]["num_queries"] == 6 and set(records) == {q.name for q in ds.queries}
    for name, r in records.items():
        info = r["info"]
        assert info["num_kept_matches"] == r["num_matches"] <= info["num_raw_matches"]
        assert info["num_raw_matches"] == base_records[name]["num_matches"]  # same matches, then filtered
        assert info["few_matches"] == (r["num_matches"] < 4)
    # ground-truth semantics: the filter removes matches but keeps (nearly) all inliers
    kept = sum(r["num_matches"] for r in records.values()) / sum(r["info"]["num_raw_matches"] for r in records.values())
    assert kept < 0.98
    assert report["all"]["median_inlier_ratio"] > base["all"]["median_inlier_ratio"]
    assert report["all"]["recall"][2] >= base["all"]["recall"][2] - 100 / 6 and report["conditions"]["dusk"]["recall"][1] == 100.0


def test_gsmc_end_to_end(demo):
    """The reduced mode, chosen explicitly, through the batch runner: true-pose recall as p3p, weights used."""
    ds, report, records = _run(demo, "gsmc", "localizer.gsmc.mode=reduced", "localizer.gsmc.reduced_num_angles=24",
                               "localizer.gsmc.reduced_max_points=800")
    _, base, base_records = _run(demo, "p3p")
    for name, r in records.items():
        info = r["info"]
        assert info["gsmc_mode"] == "reduced" and info["gsmc_time_s"] > 0
        assert r["num_matches"] == base_records[name]["num_matches"]  # no hard filtering
        assert 0 < info["num_scored_matches"] <= r["num_matches"] and info["score_max"] > 0
        assert "weight_on_inliers" not in base_records[name]["info"]  # uniform sampling: nothing to report
    # with the true semantics the sampling weight sits on the inliers more than a uniform draw's share
    w = [r["info"]["weight_on_inliers"] for r in records.values() if r["success"]]
    ratio = [r["num_inliers"] / r["num_matches"] for r in records.values() if r["success"]]
    assert len(w) >= 4 and np.median(w) > np.median(ratio) and all(0 < x <= 1 for x in w)
    assert report["all"]["recall"][2] >= base["all"]["recall"][2] - 100 / 6 and report["conditions"]["dusk"]["recall"][1] == 100.0
