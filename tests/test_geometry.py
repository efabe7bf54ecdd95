import numpy as np
import pytest

from reconstruction.geometry import (
    camera_center, compose, invert_pose, pose_errors, pose_from_qvec_center, qvec_to_rotmat, random_rotation,
    rotmat_to_qvec,
)


class TestQuaternion:
    def test_known_answer(self):
        # 90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45)
        q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
        np.testing.assert_allclose(qvec_to_rotmat(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)

    def test_round_trip(self):
        rng = np.random.default_rng(0)
        for _ in range(50):
            R = random_rotation(rng)
            q = rotmat_to_qvec(R)
            assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
            np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-10)

    def test_batched(self):
        rng = np.random.default_rng(1)
        qs = rng.normal(size=(5, 4))
        Rs = qvec_to_rotmat(qs)
        assert Rs.shape == (5, 3, 3)
        np.testing.assert_allclose(Rs[2], qvec_to_rotmat(qs[2]))

    def test_extreme_magnitudes(self):
        """Any finite non-zero scale of a quaternion is the same rotation (the norm of 1e200 overflowed to inf)."""
        q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
        for scale in (1e200, 1e-200, 1e300):
            np.testing.assert_allclose(qvec_to_rotmat(q * scale), qvec_to_rotmat(q), atol=1e-12)
        np.testing.assert_allclose(qvec_to_rotmat([1e308, 1e308, 0, 0]), qvec_to_rotmat([1, 1, 0, 0]), atol=1e-12)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="shape"):
            rotmat_to_qvec(np.eye(4))


class TestPoses:
    def test_center_convention(self):
        # CMU/NVM files give the camera centre C; t = -R C
        rng = np.random.default_rng(2)
        q, C = rng.normal(size=4), rng.normal(size=3)
        T = pose_from_qvec_center(q, C)
        np.testing.assert_allclose(camera_center(T), C, atol=1e-12)
        np.testing.assert_allclose(T[:, 3], -qvec_to_rotmat(q) @ C, atol=1e-12)

    def test_inverse_compose(self):
        rng = np.random.default_rng(3)
        T = np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], axis=1)
        np.testing.assert_allclose(compose(T, invert_pose(T)), np.eye(3, 4), atol=1e-12)

    def test_errors_known_answer(self):
        T = np.eye(3, 4)
        Rz = qvec_to_rotmat(np.array([np.cos(np.radians(5)), 0, 0, np.sin(np.radians(5))]))  # 10 degrees
        est = np.concatenate([Rz, np.zeros((3, 1))], axis=1)
        est[:, 3] = -Rz @ np.array([0.3, 0.4, 0.0])  # centre at distance 0.5
        et, er = pose_errors(est, T)
        assert et == pytest.approx(0.5) and er == pytest.approx(10.0)
        et, er = pose_errors(np.stack([T, est]), np.stack([T, T]))
        np.testing.assert_allclose(et, [0, 0.5], atol=1e-12)


class TestEstimateUp:
    def _level_cameras(self, rng, up_world, n=20, pitch_deg=0.0):
        """Cameras whose image-up direction is ``up_world`` rotated by a common pitch, random yaw about it."""
        u = np.asarray(up_world, float)
        a = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
        a /= np.linalg.norm(a)
        poses = []
        for yaw in rng.uniform(0, 2 * np.pi, n):
            f = np.cos(yaw) * a + np.sin(yaw) * np.cross(u, a)  # horizontal viewing direction
            p = np.radians(pitch_deg)
            z = np.cos(p) * f - np.sin(p) * u  # pitched down by pitch_deg
            y = -(np.cos(p) * u + np.sin(p) * f)  # image y points down
            x = np.cross(y, z)
            R = np.stack([x, y, z])
            poses.append(np.hstack([R, rng.normal(size=(3, 1))]))
        return np.array(poses)

    def test_axes_snapped_and_tilt(self):
        from reconstruction.geometry import estimate_up

        rng = np.random.default_rng(0)
        np.testing.assert_allclose(estimate_up(self._level_cameras(rng, [0, 0, 1], pitch_deg=5)), [0, 0, 1])
        np.testing.assert_allclose(estimate_up(self._level_cameras(rng, [0, 0, -1], pitch_deg=-3)), [0, 0, -1])
        tilted = np.array([0.0, np.sin(0.5), np.cos(0.5)])  # 28.6 deg from +z: not snapped
        np.testing.assert_allclose(estimate_up(self._level_cameras(rng, tilted, n=50)), tilted, atol=1e-9)
        np.testing.assert_allclose(estimate_up(self._level_cameras(rng, [0, 0, 1], pitch_deg=5), snap_deg=0) @ [0, 0, 1],
                                   np.cos(np.radians(5)), atol=0.02)

    def test_errors(self):
        from reconstruction.geometry import estimate_up

        with pytest.raises(ValueError, match=r"\(N, 3, 4\)"):
            estimate_up(np.zeros((0, 3, 4)))
        R = np.diag([1.0, 1, 1])
        with pytest.raises(ValueError, match="cancel out"):
            estimate_up(np.array([np.hstack([R, np.zeros((3, 1))]), np.hstack([np.diag([1.0, -1, -1]), np.zeros((3, 1))])]))
