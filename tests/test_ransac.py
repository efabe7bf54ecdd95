import numpy as np
import pytest

from localization.ransac import count_inliers, p3p_ransac, pycolmap_ransac, required_iterations, sample_minimal_sets
from reconstruction.camera import Camera
from reconstruction.geometry import pose_errors, random_rotation


def make_problem(seed: int, n: int = 400, outlier_ratio: float = 0.8, noise_px: float = 1.0, focal: float = 800.0):
    """Sampled pose, points at 4-40 m depth in the field of view, pixel noise, a known fraction of outliers."""
    rng = np.random.default_rng(seed)
    R = random_rotation(rng)
    t = rng.normal(size=3) * 5
    T = np.concatenate([R, t[:, None]], axis=1)
    depth = rng.uniform(4, 40, n)
    xn = rng.uniform(-0.6, 0.6, (n, 2))
    Xc = np.c_[xn * depth[:, None], depth]
    X = (Xc - t) @ R  # world = R^T (Xc - t)
    obs = xn + rng.normal(scale=noise_px / focal, size=(n, 2))
    outliers = rng.random(n) < outlier_ratio
    obs[outliers] = rng.uniform(-0.6, 0.6, (outliers.sum(), 2))
    b = np.c_[obs, np.ones(n)]
    return T, b / np.linalg.norm(b, axis=1, keepdims=True), X, outliers, focal


class TestP3PRansac:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_recovers_pose_with_80_percent_outliers(self, seed):
        T, b, X, outliers, f = make_problem(seed)
        res = p3p_ransac(b, X, f, np.random.default_rng(seed))
        assert res.success
        et, er = pose_errors(res.cam_from_world, T)
        assert et < 0.05 and er < 0.2
        # the inlier set is the true one, up to outliers that land within the threshold by chance
        assert np.all(res.inliers[~outliers])
        assert res.num_inliers <= (~outliers).sum() + 0.02 * outliers.sum()

    def test_repeatable_with_seed(self):
        T, b, X, _, f = make_problem(5)
        a = p3p_ransac(b, X, f, np.random.default_rng(7), conf={"num_iterations": 500})
        c = p3p_ransac(b, X, f, np.random.default_rng(7), conf={"num_iterations": 500})
        np.testing.assert_array_equal(a.cam_from_world, c.cam_from_world)

    def test_cheirality(self):
        # points behind the camera project to the same pixel but are never inliers
        T = np.eye(3, 4)
        X = np.array([[0.1, 0.2, -5.0], [0.0, 0.0, 3.0]])
        b = np.array([[0.1, 0.2, 5.0], [0.0, 0.0, 1.0]])
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        counts, masks = count_inliers(T[None], b, X, 0.01)
        np.testing.assert_array_equal(masks[0], [False, True])

    def test_required_iterations(self):
        # log(1 - 0.99) / log(1 - 0.5^3) = -4.6052 / -0.13353
        assert required_iterations(0.5, 0.99) == pytest.approx(34.4875, abs=1e-3)
        assert required_iterations(0.2, 0.9999) == pytest.approx(1146.7, abs=0.1)
        assert required_iterations(0.0, 0.99) == float("inf") and required_iterations(1.0, 0.99) == 0.0

    @pytest.mark.parametrize("outlier_ratio, expected", [(0.2, 256), (0.8, 1536)])
    def test_adaptive_stops_when_confident(self, outlier_ratio, expected):
        """With ~80 % inliers the bound (a few samples) is below the minimum: one batch of 256. With 77 inliers
        of 400 (w = 0.1925), log(1e-4) / log(1 - w^3) = 1291 samples: 6 batches of 256. The pose is as good as
        with the fixed 10,000."""
        T, b, X, outliers, f = make_problem(3, outlier_ratio=outlier_ratio)
        fixed = p3p_ransac(b, X, f, np.random.default_rng(0))
        res = p3p_ransac(b, X, f, np.random.default_rng(0), conf={"adaptive": True})
        assert fixed.num_iterations == 10000 and res.num_iterations == expected
        assert res.success and np.all(res.inliers[~outliers]) and res.num_inliers == fixed.num_inliers
        et, er = pose_errors(res.cam_from_world, T)
        assert et < 0.05 and er < 0.2

    def test_too_few_matches(self):
        T, b, X, _, f = make_problem(0, n=3, outlier_ratio=0)
        res = p3p_ransac(b, X, f, np.random.default_rng(0))
        assert not res.success and res.cam_from_world is None and res.num_inliers == 0

    def test_empty(self):
        res = p3p_ransac(np.zeros((0, 3)), np.zeros((0, 3)), 500.0, np.random.default_rng(0))
        assert not res.success

    def test_shape_errors(self):
        with pytest.raises(ValueError, match=r"\(N, 3\)"):
            p3p_ransac(np.zeros((5, 2)), np.zeros((5, 3)), 500.0, np.random.default_rng(0))
        with pytest.raises(ValueError, match="weights"):
            p3p_ransac(np.ones((5, 3)), np.zeros((5, 3)), 500.0, np.random.default_rng(0), weights=-np.ones(5))

    def test_weights_find_pose_that_uniform_sampling_misses(self):
        # 97 % outliers and few iterations: uniform sampling rarely draws an all-inlier set, sampling
        # weighted towards the inliers (as GSMC's scores do) finds the pose.
        T, b, X, outliers, f = make_problem(3, n=600, outlier_ratio=0.97)
        conf = {"num_iterations": 200, "min_num_inliers": 8}
        uniform = p3p_ransac(b, X, f, np.random.default_rng(0), conf=conf)
        w = np.where(outliers, 0.05, 1.0)
        weighted = p3p_ransac(b, X, f, np.random.default_rng(0), weights=w, conf=conf)
        assert weighted.success and pose_errors(weighted.cam_from_world, T)[0] < 0.1
        assert not uniform.success or pose_errors(uniform.cam_from_world, T)[0] > 0.1


class TestSampler:
    def test_distinct_and_weighted(self):
        rng = np.random.default_rng(0)
        w = np.array([10.0, 1, 1, 1, 1, 1, 1, 1, 0])
        s = sample_minimal_sets(len(w), 20000, rng, w)
        assert s.shape == (20000, 3)
        assert np.all(np.sort(s, 1)[:, 1:] != np.sort(s, 1)[:, :-1])
        freq = np.bincount(s.ravel(), minlength=len(w)) / s.size
        assert freq[8] == 0  # zero weight: never drawn
        # a set is drawn with probability proportional to the product of its weights:
        # P(0 in set) = 10 * C(7, 2) / (10 * C(7, 2) + C(7, 3)) = 210 / 245
        assert abs(3 * freq[0] - 210 / 245) < 0.01

    def test_not_enough_weighted(self):
        with pytest.raises(ValueError, match="non-zero weight"):
            sample_minimal_sets(5, 10, np.random.default_rng(0), np.array([1.0, 1, 0, 0, 0]))


def test_pycolmap_estimator_agrees():
    T, b, X, outliers, f = make_problem(4, outlier_ratio=0.5)
    cam = Camera("PINHOLE", 1000, 1000, (f, f, 500.0, 500.0))
    px = b[:, :2] / b[:, 2:] * f + 500.0 - 0.5  # project convention: integer = pixel centre
    res = pycolmap_ransac(px, X, cam)
    assert res.success and pose_errors(res.cam_from_world, T)[0] < 0.05
