"""Label sources and labelled maps: majority voting on known answers, label lookup at pixel centres, the labelled
map of a generated street against its ground-truth semantics, bad inputs."""
import cv2
import h5py
import numpy as np
import pytest

from fgsn.utils.config import merge_config
from reconstruction import label_map, semantics
from reconstruction.datasets import load_dataset
from reconstruction.records import DatasetError
from reconstruction.geometry import camera_center
from reconstruction.label_map import LabelledMap, group_median, vote
from reconstruction.semantics import LabelReader, labels_at


class TestVote:
    def test_known_answer(self):
        rows = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
        labels = np.array([3, 3, 1, 2, 0, 4, 4, 4, 1])
        label, conf, votes = vote(rows, labels, num_points=4, num_classes=5)
        np.testing.assert_array_equal(label, [3, 0, 4, -1])  # point 1: tie 2 vs 0 -> smallest label
        np.testing.assert_allclose(conf, [2 / 3, 1 / 2, 3 / 4, 0])
        np.testing.assert_array_equal(votes, [3, 2, 4, 0])

    def test_empty_and_bad(self):
        label, conf, votes = vote(np.zeros(0, int), np.zeros(0, int), 3, 2)
        np.testing.assert_array_equal(label, [-1, -1, -1])
        with pytest.raises(ValueError, match="labels must lie"):
            vote(np.array([0]), np.array([2]), 1, 2)


def test_group_median_known_answer():
    groups = np.array([2, 0, 2, 2, 0, 4])
    values = np.array([5.0, 1.0, 3.0, 4.0, 2.0, -1.0])
    np.testing.assert_allclose(group_median(groups, values, 6), [1.5, np.nan, 4.0, np.nan, -1.0, np.nan])
    assert group_median(np.zeros(0, int), np.zeros(0), 2).shape == (2,)


def test_vote_with_many_labels_stays_sparse():
    """K = 1000 labels on 10^5 points would need 10^8 dense counters; the vote only counts the pairs present."""
    rows = np.array([99_999, 99_999, 99_999, 5])
    labels = np.array([999, 7, 999, 0])
    label, conf, votes = vote(rows, labels, num_points=100_000, num_classes=1000)
    assert label[99_999] == 999 and label[5] == 0 and (label == -1).sum() == 99_998
    np.testing.assert_allclose(conf[[5, 99_999]], [1.0, 2 / 3])


class TestLabelsAt:
    def test_pixel_centres_rounding_and_clipping(self):
        lab = np.arange(12).reshape(3, 4)
        kp = np.array([[0, 0], [3, 2], [1.4, 0.6], [2.5001, 1.2], [-3, 9]])
        np.testing.assert_array_equal(labels_at(lab, kp), [0, 11, 5, 7, 8])

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"\(N, 2\)"):
            labels_at(np.zeros((2, 2)), np.zeros((3, 3)))


class TestLabelFiles:
    def test_pngs_round_trip_and_errors(self, tmp_path):
        lab = np.random.default_rng(0).integers(0, 7, (5, 6)).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "a.png"), lab)
        path = semantics.labels_from_pngs([("s/db/a.jpg", tmp_path / "a.png")], tmp_path / "l.h5", 7)
        reader = LabelReader(path)
        assert reader.num_classes == 7
        np.testing.assert_array_equal(reader.labels("s/db/a.jpg"), lab)
        np.testing.assert_array_equal(reader.at("s/db/a.jpg", np.array([[5, 4]])), [lab[4, 5]])
        with pytest.raises(KeyError, match="no labels"):
            reader.labels("missing.jpg")
        with pytest.raises(DatasetError, match="b.png: label image missing"):
            semantics.labels_from_pngs([("b", tmp_path / "b.png")], tmp_path / "l2.h5", 7)
        with pytest.raises(DatasetError, match="a.png: label 6 >= num_classes 5"):
            semantics.labels_from_pngs([("a", tmp_path / "a.png")], tmp_path / "l3.h5", 5)

    def test_source_names_and_missing_images(self, tmp_path):
        conf = merge_config(semantics.default_conf, overrides=[
            "checkpoint=outputs/train-fgsn/fgsn-cpu-k20/checkpoints/best.pt", "segment.resize_short=160"])
        assert semantics.source_name(conf) == "fgsn-cpu-k20-best-s160"
        with pytest.raises(ValueError, match="needs semantics.checkpoint"):
            semantics.source_name(merge_config(semantics.default_conf))
        conf = merge_config(semantics.default_conf, overrides=["source=labels", f"labels={tmp_path / 'none.h5'}"])
        with pytest.raises(DatasetError, match="none.h5: label file not found"):
            semantics.main(conf, [], tmp_path / "none.h5")


def test_labelled_map_of_generated_street(semantic_demo, tmp_path):
    """Points triangulated from database images carry the class of the surface they lie on: the voted label
    agrees with the ground-truth class maps (which are exact), and the statistics are consistent."""
    from reconstruction import features as feature_step
    from reconstruction import sfm_map

    data, cache, labels = semantic_demo
    ds = load_dataset("cmu", data)
    conf = merge_config(label_map.cli_conf(), overrides=["semantics.source=labels", f"semantics.labels={labels}"])
    out = label_map.label_dataset(conf, ds, tmp_path)
    (map_id, path), = out.items()
    lmap = LabelledMap.load(path)
    assert path.with_suffix(".ply").stat().st_size > 1000 and path.with_suffix(".png").stat().st_size > 1000
    with h5py.File(tmp_path / "cache" / sfm_map.map_filename(map_id, feature_step.feature_filename(conf.features))) as f:
        np.testing.assert_array_equal(lmap.xyz, f["xyz"][()])  # rows aligned with the map file
    ok = lmap.label >= 0
    assert ok.mean() > 0.95
    assert np.median(lmap.confidence[ok]) == 1.0  # exact semantics: nearly all observations agree
    assert lmap.label[ok].max() < lmap.num_classes == 10
    assert np.all(lmap.track_length[ok] >= 2) and np.all(lmap.d_min[ok] <= lmap.d_max[ok])
    # the database cameras drive at a fixed height above the road (z = 0, world up +z)
    db_heights = [camera_center(r.cam_from_world)[2] for r in ds.database]
    assert np.nanmin(lmap.cam_height[ok]) >= min(db_heights) - 1e-3
    assert np.nanmax(lmap.cam_height[ok]) <= max(db_heights) + 1e-3
    # geometric sanity of the labels: road/sidewalk/marking points lie near z = 0, sky points do not exist
    ground = np.isin(lmap.label, [1, 2, 8])
    assert ground.sum() > 20 and np.median(np.abs(lmap.xyz[ground, 2])) < 0.3
    assert (lmap.label == 0).mean() < 0.03, (lmap.label == 0).mean()


def test_killed_and_resumed_label_map_matches_uninterrupted(semantic_demo, tmp_path):
    """``fgsn-loc label-map`` killed with SIGKILL during its SIFT step and run again (issue 13): the same feature
    file and labelled map as an uninterrupted run, the images extracted before the kill are not extracted again
    (the log counts them as done), and no partial file is left."""
    import re

    from fgsn.utils.io import H5GroupWriter
    from reconstruction import features as feature_step
    from tests.killing import assert_clean, cli, kill_when, run_cli

    data, _, labels = semantic_demo
    ds = load_dataset("cmu", data)
    overrides = ["semantics.source=labels", f"semantics.labels={labels}", "features.num_threads=1"]
    ref = label_map.label_dataset(merge_config(label_map.cli_conf(), overrides=overrides), ds, tmp_path / "ref")
    feats = feature_step.feature_filename(feature_step.default_conf)
    out = tmp_path / "killed"
    command = cli("label-map", "--dataset", "cmu", "--root", data, "--out", out, *overrides)
    writer = H5GroupWriter(out / "cache" / feats)
    kill_when(command, lambda: len(list(writer.parts_dir.glob("*.h5"))) >= 3, tmp_path / "killed.log")
    done = writer.pending()
    n = len(ds.database)
    assert 3 <= len(done) < n and not (out / "cache" / feats).exists()

    resumed = run_cli(command, tmp_path / "resumed.log")
    assert re.search(rf"SIFT: {n - len(done)} of {n} images to extract", resumed)
    with h5py.File(tmp_path / "ref" / "cache" / feats) as a, h5py.File(out / "cache" / feats) as b:
        for r in ds.database:
            for k in ("keypoints", "descriptors"):
                np.testing.assert_array_equal(a[r.key][k][()], b[r.key][k][()])
    (map_id, path), = ref.items()
    a, b = LabelledMap.load(path), LabelledMap.load(out / path.name)
    for k in ("xyz", "label", "confidence", "track_length", "d_min", "d_max", "view_dir", "view_spread", "cam_height"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert (out / path.name).with_suffix(".ply").is_file() and (out / path.name).with_suffix(".png").is_file()
    assert_clean(out)
