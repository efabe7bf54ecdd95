import os

import numpy as np
import pytest

from localization.matching import (DescriptorIndex, default_conf, index_filename, matches_filename,
                                   mean_point_descriptors, resolve_index)


def test_ratio_test_and_same_point_rule():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, (4, 8)).astype(np.float32)
    # point 0 has two near-identical descriptors; points 1 and 2 are near-duplicates of each other (ambiguous)
    base[2] = base[1] + 0.05
    db = np.stack([base[0], base[0] + 0.5, base[1], base[2], base[3]])
    owner = np.array([0, 0, 1, 2, 3])
    idx = DescriptorIndex(db, owner, point_descriptor="all")
    q = np.stack([base[0] + 0.1, (base[1] + base[2]) / 2, base[3] + 30.0 * rng.normal(size=8)])
    m = idx.match(q, ratio_threshold=0.9)
    # query 0 -> point 0 (its second neighbour is the same point, which does not count)
    # query 1 is ambiguous between points 1 and 2 -> rejected
    assert 0 in m["query_idx"] and m["point_idx"][list(m["query_idx"]).index(0)] == 0
    assert 1 not in m["query_idx"]


def test_mean_descriptors_and_empty():
    d = np.array([[0, 0], [2, 2], [10, 10]], np.uint8)
    mean, pts = mean_point_descriptors(d, np.array([5, 5, 7]))
    np.testing.assert_allclose(mean, [[1, 1], [10, 10]])
    np.testing.assert_array_equal(pts, [5, 7])
    idx = DescriptorIndex(d, np.array([5, 5, 7]))
    m = idx.match(np.array([[1.2, 1.0]], np.float32))
    np.testing.assert_array_equal(m["point_idx"], [5])
    assert len(idx.match(np.zeros((0, 2), np.float32))["query_idx"]) == 0


def _separated(rng, num_points=300, per_point=2):
    """Well-separated descriptors (clusters far apart), ``per_point`` near copies each, and a query near each."""
    centres = rng.uniform(0, 255, (num_points, 128)).astype(np.float32)
    db = np.repeat(centres, per_point, axis=0) + rng.normal(0, 1.0, (num_points * per_point, 128)).astype(np.float32)
    owner = np.repeat(np.arange(num_points), per_point)
    return db, owner, centres + rng.normal(0, 2.0, centres.shape).astype(np.float32)


APPROX_CONFS = [{"index": "hnsw", "hnsw_m": 16, "hnsw_ef_search": 64},
                {"index": "ivf", "ivf_nlist": 4, "ivf_nprobe": 2, "ivf_quantizer": "flat"},
                {"index": "ivf", "ivf_nlist": 4, "ivf_nprobe": 2, "ivf_quantizer": "hnsw"}]
APPROX_IDS = ["hnsw", "ivf-flatq", "ivf-hnswq"]


class TestApproximateIndex:
    @pytest.mark.parametrize("conf", APPROX_CONFS, ids=APPROX_IDS)
    def test_same_matches_as_exact_on_separated_descriptors(self, conf):
        db, owner, q = _separated(np.random.default_rng(0))
        exact = DescriptorIndex(db, owner, "all").match(q)
        approx = DescriptorIndex(db, owner, "all", conf).match(q)
        assert len(exact["query_idx"]) == len(q)
        np.testing.assert_array_equal(approx["query_idx"], exact["query_idx"])
        np.testing.assert_array_equal(approx["point_idx"], exact["point_idx"])
        np.testing.assert_allclose(approx["distance"], exact["distance"], rtol=1e-4)  # faiss kernels differ

    @pytest.mark.parametrize("conf", APPROX_CONFS, ids=APPROX_IDS)
    def test_second_descriptor_of_same_point_does_not_reject(self, conf):
        rng = np.random.default_rng(1)
        db, owner, q = _separated(rng, per_point=3)  # each point's 3 descriptors lie within ~1 of each other
        m = DescriptorIndex(db, owner, "all", conf).match(q, ratio_threshold=0.9, num_neighbors=10)
        np.testing.assert_array_equal(m["query_idx"], np.arange(len(q)))
        np.testing.assert_array_equal(m["point_idx"], np.arange(len(q)))
        ambiguous = np.concatenate([db, db[:3] + 0.5])  # point 0's descriptors copied to a new point 300
        m = DescriptorIndex(ambiguous, np.r_[owner, [300] * 3], "all", conf).match(q[:1])
        assert len(m["query_idx"]) == 0

    def test_cache_reused_and_named_by_settings(self, tmp_path, monkeypatch):
        db, owner, q = _separated(np.random.default_rng(2))
        map_path = tmp_path / "map-a-sift-test.h5"
        map_path.write_bytes(b"")
        conf = {**default_conf, "index": "ivf", "ivf_nlist": 4}
        path = index_filename(map_path, conf, len(db))
        assert path.name == "map-a-sift-test-mean-ivf4-s0-hnsw32.faiss"
        assert index_filename(map_path, {**conf, "seed": 1}, len(db)).name == "map-a-sift-test-mean-ivf4-s1-hnsw32.faiss"
        assert index_filename(map_path, {**conf, "ivf_quantizer": "flat"}, len(db)).name == \
            "map-a-sift-test-mean-ivf4-s0.faiss"
        assert index_filename(map_path, {**conf, "ivf_nlist": 1000}, len(db)).name.endswith("-ivf15-s0-hnsw32.faiss")
        auto = {**default_conf, "auto_min_descriptors": 500}
        assert index_filename(map_path, auto, 500).name == "map-a-sift-test-mean-ivf12-s0-hnsw32.faiss"
        hnsw = {**default_conf, "index": "hnsw"}
        assert index_filename(map_path, hnsw, 10).name == "map-a-sift-test-mean-hnsw32-efc40.faiss"
        first = DescriptorIndex(db, owner, "all", conf, path, map_path)
        assert first.built and path.exists()
        again = DescriptorIndex(db, owner, "all", conf, path, map_path)
        assert not again.built
        for k, v in first.match(q).items():
            np.testing.assert_array_equal(again.match(q)[k], v)
        os.utime(path, (0, 0))  # older than the map file: rebuilt
        assert DescriptorIndex(db, owner, "all", conf, path, map_path).built

    def test_matches_filename_carries_index(self):
        name = matches_filename("feats-sift-test.h5", default_conf)
        assert name == "matches-sift-test-mean-r0.9-auto50000-ivf16384-p8-hnsw32-ef32.h5"
        assert matches_filename("feats-sift-test.h5", {**default_conf, "index": "flat"}) == \
            "matches-sift-test-mean-r0.9.h5"
        assert matches_filename("feats-sift-test.h5", {**default_conf, "index": "hnsw"}) == \
            "matches-sift-test-mean-r0.9-hnsw32-efc40-ef48.h5"
        assert matches_filename("feats-sift-test.h5", {**default_conf, "index": "ivf"}) == \
            "matches-sift-test-mean-r0.9-ivf16384-p8-hnsw32-ef32.h5"
        assert matches_filename("feats-sift-test.h5", {**default_conf, "index": "ivf", "ivf_quantizer": "flat"}) == \
            "matches-sift-test-mean-r0.9-ivf16384-p8.h5"
        with pytest.raises(ValueError, match="index must be one of"):
            matches_filename("feats-sift-test.h5", {**default_conf, "index": "lsh"})
        with pytest.raises(ValueError, match="index must be one of"):
            DescriptorIndex(np.zeros((2, 4)), np.arange(2), "all", {"index": "lsh"})


class TestAutoIndexAndNeighbours:
    def test_auto_is_flat_for_small_maps_and_ivf_for_large(self):
        conf = {**default_conf, "auto_min_descriptors": 100}
        assert resolve_index(conf, 99) == "flat" and resolve_index(conf, 100) == "ivf"
        assert resolve_index({**conf, "index": "hnsw"}, 10) == "hnsw"
        db, owner, q = _separated(np.random.default_rng(4))  # 300 points x 2 descriptors -> 300 mean descriptors
        small = DescriptorIndex(db, owner, "mean", {**conf, "auto_min_descriptors": 301})
        large = DescriptorIndex(db, owner, "mean", {**conf, "auto_min_descriptors": 300, "ivf_nlist": 4,
                                                    "ivf_nprobe": 4})
        assert small.kind == "flat" and large.kind == "ivf"
        exact = DescriptorIndex(db, owner, "mean", {"index": "flat"}).match(q)
        for idx in (small, large):  # nprobe = nlist: exhaustive, the exact matches
            got = idx.match(q)
            np.testing.assert_array_equal(got["query_idx"], exact["query_idx"])
            np.testing.assert_array_equal(got["point_idx"], exact["point_idx"])
            np.testing.assert_allclose(got["distance"], exact["distance"], rtol=1e-4)
        with pytest.raises(ValueError, match="ivf_quantizer must be one of"):
            resolve_index({**conf, "ivf_quantizer": "pq"}, 10)

    def test_mean_descriptors_ratio_test_against_brute_force(self):
        """With one descriptor per point, two neighbours give Lowe's test against the nearest other point."""
        rng = np.random.default_rng(5)
        db = rng.integers(0, 60, (400, 16)).astype(np.float32)
        owner = rng.integers(0, 150, 400)
        means, points = mean_point_descriptors(db, owner)
        q = (means[rng.integers(0, len(means), 200)] + rng.normal(0, 12, (200, 16))).astype(np.float32)
        d = np.sqrt(((q[:, None] - means[None]) ** 2).sum(-1))
        order = np.argsort(d, axis=1)
        d1, d2 = np.take_along_axis(d, order[:, :2], 1).T
        keep = d1 < 0.8 * d2
        m = DescriptorIndex(db, owner, "mean", {"index": "flat"}).match(q, 0.8, num_neighbors=10)
        np.testing.assert_array_equal(m["query_idx"], np.nonzero(keep)[0])
        np.testing.assert_array_equal(m["point_idx"], points[order[keep, 0]])
        assert 20 < keep.sum() < 180

    def test_flat_quantizer_builds_repeat(self):
        import faiss

        db, owner, _ = _separated(np.random.default_rng(6), num_points=400)
        conf = {**default_conf, "index": "ivf", "ivf_nlist": 8, "ivf_quantizer": "flat"}
        a, b = (DescriptorIndex(db, owner, "all", conf).index for _ in range(2))
        assert bytes(faiss.serialize_index(a)) == bytes(faiss.serialize_index(b))
