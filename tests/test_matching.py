import numpy as np

from localization.matching import DescriptorIndex, mean_point_descriptors


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
