"""reconstruction.camera: projection against pycolmap for every supported model, NumPy == torch, the fold-over
guard, unprojection round trips, pixel conventions."""
import numpy as np
import pytest
import torch

from reconstruction.camera import Camera, project_world
from reconstruction.geometry import random_rotation

CAMERAS = [
    Camera("SIMPLE_PINHOLE", 160, 120, (100.0, 80.0, 60.0)),
    Camera("PINHOLE", 160, 120, (110.0, 100.0, 81.0, 59.0)),
    Camera("SIMPLE_RADIAL", 160, 120, (100.0, 80.0, 60.0, -0.05)),
    Camera("RADIAL", 160, 120, (100.0, 80.0, 60.0, -0.05, 0.01)),
    Camera("OPENCV", 160, 120, (110.0, 110.0, 80.0, 60.0, -0.05, 0.01, 0.0005, -0.0003)),
    # the real Extended CMU Seasons c0 camera
    Camera("OPENCV", 1024, 768, (868.993378, 866.063001, 525.942323, 420.042529, -0.399431, 0.188924, 0.000153, 0.000571)),
]


def _points(n=600, seed=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-0.9, 0.9, (n, 2)), np.ones((n, 1))], 1) * rng.uniform(1, 20, (n, 1))


@pytest.mark.parametrize("cam", CAMERAS, ids=lambda c: f"{c.model}-{c.width}")
class TestProject:
    def test_matches_pycolmap(self, cam):
        Xc = _points()
        uv, ok = cam.project(Xc)
        ref = cam.to_pycolmap().img_from_cam(Xc) - 0.5  # COLMAP -> project pixel convention
        inside = cam.in_image(ref)
        np.testing.assert_allclose(uv[inside], ref[inside], atol=1e-6)
        assert ok[inside].all() and (ok & cam.in_image(uv) == inside).all()
        assert inside.sum() > 100 and (~inside).sum() > 50

    def test_torch_equals_numpy(self, cam):
        Xc = _points()
        uv, ok = cam.project(Xc)
        uv_t, ok_t = cam.project(torch.as_tensor(Xc))
        assert uv_t.dtype == torch.float64 and ok_t.dtype == torch.bool
        np.testing.assert_array_equal(uv_t.numpy(), uv)
        np.testing.assert_array_equal(ok_t.numpy(), ok)
        uv32, ok32 = cam.project(torch.as_tensor(Xc, dtype=torch.float32))
        assert uv32.dtype == torch.float32
        np.testing.assert_allclose(uv32.numpy(), uv, atol=1e-3)

    def test_round_trip(self, cam):
        """Pixels -> bearings -> scaled -> project gives the pixels back (distortion inverted by pycolmap)."""
        rng = np.random.default_rng(0)
        xy = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], (200, 2))
        b = cam.bearings(xy)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0)
        uv, ok = cam.project(b * rng.uniform(0.5, 50, (200, 1)))
        assert ok.all() and cam.in_image(uv).all()
        np.testing.assert_allclose(uv, xy, atol=1e-5)

    def test_shapes(self, cam):
        uv, ok = cam.project(np.zeros((2, 5, 3)) + [0.0, 0.0, 1.0])
        assert uv.shape == (2, 5, 2) and ok.shape == (2, 5) and ok.all()
        np.testing.assert_allclose(uv[0, 0], np.array(cam.intrinsics[2:4]))  # the optical axis hits (cx, cy)
        assert cam.bearings(np.zeros((0, 2))).shape == (0, 3)
        with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
            cam.project(np.zeros((4, 2)))


class TestGuard:
    def test_behind_and_folded_rejected(self):
        # r (1 - 0.4 r^2) stops increasing at r = sqrt(1 / 1.2) = 0.913: r = 1.5 folds back to 0.15
        cam = Camera("OPENCV", 100, 100, (50.0, 50.0, 50.0, 50.0, -0.4, 0.0, 0.0, 0.0))
        Xc = np.array([[0.0, 0.0, -5.0], [1.5, 0.0, 1.0], [0.1, 0.0, 1.0]])
        uv, ok = cam.project(Xc)
        assert ok.tolist() == [False, False, True]
        assert cam.in_image(uv[1]) and uv[1, 0] == pytest.approx(49.5 + 50 * 0.15)  # folded into the image
        assert cam.max_radius2 == pytest.approx(1 / 1.2, abs=2e-3)

    def test_no_distortion_guard_is_the_border(self):
        cam = Camera("PINHOLE", 101, 51, (50.0, 50.0, 50.5, 25.5))
        corner2 = (50 / 50.0) ** 2 + (25 / 50.0) ** 2  # pixel centre (0, 0) relative to (50, 25)
        assert cam.max_radius2 == pytest.approx(corner2 * 1.05**2)

    def test_unsupported_model(self):
        with pytest.raises(ValueError, match="FISHEYE"):
            Camera("OPENCV_FISHEYE", 10, 10, (5.0, 5.0, 5.0, 5.0, 0, 0, 0, 0)).project(np.zeros((1, 3)))
        with pytest.raises(ValueError, match="takes 4 parameters"):
            Camera("PINHOLE", 10, 10, (5.0, 5.0, 5.0)).intrinsics


def test_project_world_known_pose():
    cam = CAMERAS[1]
    rng = np.random.default_rng(1)
    R = random_rotation(rng)
    C = np.array([1.0, -2.0, 0.5])
    T = np.concatenate([R, (-R @ C)[:, None]], 1)
    Xc = _points(100)
    Xw = (Xc - T[:, 3]) @ R  # world points that the pose maps to Xc
    xy, ok = project_world(Xw, T, cam)
    uv, ok_c = cam.project(Xc)
    np.testing.assert_allclose(xy, uv, atol=1e-9)
    assert (ok == (ok_c & cam.in_image(uv))).all()


def test_project_world_known_answer():
    cam = Camera("PINHOLE", 100, 80, (50.0, 50.0, 50.0, 40.0))
    pose = np.hstack([np.eye(3), np.zeros((3, 1))])
    xy, ok = project_world(np.array([[0, 0, 2.0], [0.2, -0.4, 1.0], [0, 0, -1.0], [10, 0, 1.0]]), pose, cam)
    np.testing.assert_allclose(xy[:2], [[49.5, 39.5], [59.5, 19.5]])  # COLMAP's +0.5 removed
    np.testing.assert_array_equal(ok, [True, True, False, False])  # behind; outside the image
