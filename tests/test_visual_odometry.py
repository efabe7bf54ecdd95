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


def test_sampson_errors_zero_on_exact_correspondences_and_first_order_distance():
    from reconstruction.geometry import sampson_errors, skew

    rng = np.random.default_rng(3)
    X = np.stack([rng.uniform(-5, 5, 50), rng.uniform(-2, 2, 50), rng.uniform(4, 20, 50)], 1)
    R, t = _rot(np.array([0, 1.0, 0]), 3.0), np.array([-1.0, 0.0, -0.2])
    x1 = X[:, :2] / X[:, 2:]
    X2 = X @ R.T + t
    x2 = X2[:, :2] / X2[:, 2:]
    np.testing.assert_allclose(sampson_errors(skew(t) @ R, x1, x2), 0, atol=1e-12)
    # moving x2 by d along the epipolar line's normal changes the error by about d / sqrt(2) (the Sampson error
    # spreads a residual over both images equally when the two lines' normals have equal length)
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ R
    line = np.c_[x1, np.ones(50)] @ E.T
    n = line[:, :2] / np.linalg.norm(line[:, :2], axis=1, keepdims=True)
    e = sampson_errors(skew(t) @ R, x1, x2 + 1e-4 * n)
    l1 = np.linalg.norm(line[:, :2], axis=1)
    l2 = np.linalg.norm((np.c_[x2, np.ones(50)] @ E)[:, :2], axis=1)
    np.testing.assert_allclose(np.abs(e), 1e-4 * l1 / np.sqrt(l1**2 + l2**2), rtol=1e-3)


def test_motion_sigmas_match_the_spread_of_repeated_estimates():
    """Known answer by simulation: the predicted rotation / direction sigmas of one estimate agree with the
    standard deviations of 30 estimates of the same motion under independent 0.5 px pixel noise."""
    rng = np.random.default_rng(4)
    points = np.stack([rng.uniform(-15, 15, 600), rng.uniform(-3, 3, 600), rng.uniform(5, 40, 600)], 1)
    desc = rng.uniform(0, 100, (600, 128))
    R2 = _rot(np.array([0, 1.0, 0]), 4.0)
    c2 = np.array([0.3, 0.0, 1.5])
    t2 = -R2 @ c2 / np.linalg.norm(c2)
    rot_err, dir_err, sig_rot, sig_dir = [], [], [], []
    for _ in range(30):
        kp1, d1, _ = _frame(points, np.eye(3), np.zeros(3), desc, rng)
        kp2, d2, _ = _frame(points, R2, -R2 @ c2, desc, rng)
        kp1 += rng.normal(0, 0.4, kp1.shape)  # 0.3 px from _frame, 0.5 px in all
        kp2 += rng.normal(0, 0.4, kp2.shape)
        m = two_view_motion(kp1, d1, CAM, kp2, d2, CAM, max_error_px=3.0)
        dR = m.R @ R2.T
        w = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]]) / 2  # small-angle axis-angle
        rot_err.append(w)
        dir_err.append(np.arccos(np.clip(m.t @ t2, -1, 1)))
        sig_rot.append(m.sigma_rot_rad)
        sig_dir.append(m.sigma_dir_rad)
    emp_rot = np.sqrt(np.mean(np.square(rot_err)))  # per axis RMS
    emp_dir = np.sqrt(np.mean(np.square(dir_err)) / 2)  # the angle has two degrees of freedom
    assert 0.6 < np.median(sig_rot) / emp_rot < 1.6, (np.median(sig_rot), emp_rot)
    assert 0.6 < np.median(sig_dir) / emp_dir < 1.6, (np.median(sig_dir), emp_dir)
    assert 1e-5 < emp_rot < 1e-2  # the noise is visible and the motion well determined
