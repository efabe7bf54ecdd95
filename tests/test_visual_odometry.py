"""Visual odometry between two frames (reconstruction.visual_odometry) on a constructed scene with a known motion."""
import numpy as np

from reconstruction.camera import Camera
from reconstruction.visual_odometry import mutual_matches, two_view_motion

CAM = Camera("OPENCV", 640, 480, (500.0, 500.0, 320.0, 240.0, -0.08, 0.01, 0.0005, -0.0003))


def _rot(axis, deg):
    a = np.radians(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _frame(points, R, t, desc, rng, outliers=0):
    Xc = points @ R.T + t
    uv, ok = CAM.project(Xc)
    ok &= CAM.in_image(uv)
    d = desc[ok] + rng.normal(0, 2.0, desc[ok].shape)  # the same point's descriptor, seen again with noise
    kp = uv[ok] + rng.normal(0, 0.3, uv[ok].shape)
    if outliers:
        kp = np.concatenate([kp, rng.uniform([0, 0], [640, 480], (outliers, 2))])
        d = np.concatenate([d, rng.uniform(0, 100, (outliers, desc.shape[1]))])
    return kp, d, Xc[ok]


def test_two_view_motion_known_answer():
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(-15, 15, 800), rng.uniform(-3, 3, 800), rng.uniform(5, 40, 800)], 1)
    desc = rng.uniform(0, 100, (800, 128))
    R2 = _rot(np.array([0, 1.0, 0]), 4.0)  # yaw 4 degrees
    c2 = np.array([0.3, 0.0, 1.5])  # the second camera 1.5 m forward, 0.3 m right (in the first camera frame)
    t2 = -R2 @ c2
    kp1, d1, Xc1 = _frame(points, np.eye(3), np.zeros(3), desc, rng, outliers=100)
    kp2, d2, _ = _frame(points, R2, t2, desc, rng, outliers=100)
    assert len(mutual_matches(d1, d2)) > 500
    m = two_view_motion(kp1, d1, CAM, kp2, d2, CAM)
    assert m is not None and m.num_inliers > 500
    angle = np.degrees(np.arccos(np.clip((np.trace(m.R.T @ R2) - 1) / 2, -1, 1)))
    assert angle < 0.1
    assert np.degrees(np.arccos(m.t @ (t2 / np.linalg.norm(t2)))) < 1.0
    # triangulated at unit baseline: times the true baseline they are the first frame's metric points
    scale = np.linalg.norm(c2)
    row = {tuple(k): i for i, k in enumerate(kp1)}
    idx = np.array([row[tuple(k)] for k in m.keypoints])
    true = idx < len(Xc1)  # not one of the random outliers
    assert true.mean() > 0.95 and len(idx) > 400
    rel = np.abs(m.points[true, 2] * scale - Xc1[idx[true], 2]) / Xc1[idx[true], 2]
    assert np.median(rel) < 0.03
    np.testing.assert_allclose(m.increment(scale), np.concatenate([m.R, scale * m.t[:, None]], 1))


def test_no_motion_from_unrelated_frames():
    rng = np.random.default_rng(1)
    kp = rng.uniform([0, 0], [640, 480], (300, 2))
    assert two_view_motion(kp, rng.uniform(0, 100, (300, 128)), CAM, kp, rng.uniform(0, 100, (300, 128)), CAM) is None
