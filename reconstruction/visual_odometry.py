"""Visual odometry between consecutive query frames, from the query images alone (no ground truth, no map).

Per pair of frames (prev, cur): their SIFT features (the localization's feature file) are matched by mutual
nearest neighbours with Lowe's ratio test (faiss, exact inner product on the L2-normalised RootSIFT
descriptors), the essential matrix is estimated with LO-RANSAC and decomposed with the cheirality test
(``pycolmap.estimate_essential_matrix``, which undistorts with the cameras' models), and the inlier
correspondences are triangulated in the previous camera frame for a unit baseline. The result is the rotation
and the translation *direction* of ``cur_from_prev``; monocular VO has no metric scale, which the caller supplies
(PFSL: from its own state and the map, :func:`localization.pfsl.vo_scale_from_state`).

Each motion also carries its own noise estimate (:func:`motion_covariance`): the first-order (Gauss-Newton)
covariance of the rotation and of the translation direction, sigma^2 (J^T J)^-1, with J the Jacobian of the inliers'
Sampson errors and sigma^2 their residual variance, the standard covariance of a least-squares estimate
(Hartley & Zisserman, Multiple View Geometry, 2nd ed., Sec. 5.2.3 and 11.4.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera, to_colmap_pixels
from .geometry import axis_angle_to_rotmat, sampson_errors, skew


@dataclass
class TwoViewMotion:
    """Relative motion of two frames up to scale.

    Attributes:
        R: (3, 3) rotation of cur_from_prev.
        t: (3,) unit translation of cur_from_prev (X_cur = R X_prev + s t for the metric scale s, metres).
        points: (N, 3) inlier correspondences triangulated in the previous camera frame for s = 1.
        keypoints: (N, 2) their pixels in the previous image (integer = pixel centre).
        num_matches: mutual ratio-test matches given to RANSAC.
        num_inliers: RANSAC inliers.
        sigma_rot_rad: standard deviation of the rotation per axis (RMS over the three axes), radians, from the
            inliers' residuals (:func:`motion_covariance`); None when not estimated.
        sigma_dir_rad: the same for the direction of :attr:`t` (RMS over its two degrees of freedom), radians.
    """

    R: np.ndarray
    t: np.ndarray
    points: np.ndarray
    keypoints: np.ndarray
    num_matches: int
    num_inliers: int
    sigma_rot_rad: float | None = None
    sigma_dir_rad: float | None = None

    def increment(self, scale: float) -> np.ndarray:
        """(3, 4) cur_from_prev for a metric scale (metres per unit of :attr:`t`)."""
        return np.concatenate([self.R, (float(scale) * self.t)[:, None]], axis=1)


def mutual_matches(desc1: np.ndarray, desc2: np.ndarray, ratio: float = 0.8) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test (on distances) between two descriptor sets.

    Args:
        desc1: (N1, D), desc2: (N2, D) descriptors (any dtype; L2-normalised here).
        ratio: Lowe's ratio on the L2 distances of the first two neighbours in ``desc2``.
    Returns:
        (M, 2) int64 index pairs (i in desc1, j in desc2).
    """
    import faiss

    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.int64)
    a = np.ascontiguousarray(desc1, np.float32)
    b = np.ascontiguousarray(desc2, np.float32)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    ib = faiss.IndexFlatIP(b.shape[1])
    ib.add(b)
    sim, nn = ib.search(a, 2)
    d2 = np.maximum(2 - 2 * sim, 0)  # squared L2 distances of unit vectors
    ok = d2[:, 0] < ratio**2 * d2[:, 1]
    ia = faiss.IndexFlatIP(a.shape[1])
    ia.add(a)
    _, back = ia.search(b, 1)
    i = np.nonzero(ok & (back[nn[:, 0], 0] == np.arange(len(a))))[0]
    return np.stack([i, nn[i, 0]], 1).astype(np.int64)


def motion_covariance(R: np.ndarray, t: np.ndarray, x1: np.ndarray, x2: np.ndarray, step: float = 1e-6):
    """First-order covariance of a two-view motion estimated from its inliers (module docstring).

    Parameters: a rotation increment w (R' = exp([w]x) R, 3) and a translation-direction increment (a, b) in the
    tangent plane of t (2); J = d(Sampson errors) / d(w, a, b) by central differences at the estimate, sigma^2 =
    sum r^2 / (N - 5), covariance = sigma^2 (J^T J)^-1. It measures the estimate's spread from the residual noise
    alone; correlated errors (repeated texture, a moving object) are not in it.

    Args:
        R, t: (3, 3), (3,) the estimate (t unit, cur_from_prev).
        x1, x2: (N, 2) the inliers' normalised image coordinates (previous / current frame), N > 5.
        step: finite-difference step, radians.
    Returns:
        (cov, sigma_rot_rad, sigma_dir_rad): the (5, 5) covariance (w, a, b), the RMS per-axis rotation and the
        RMS translation-direction standard deviations, radians. Infinite sigmas when J^T J is singular.
    Raises:
        ValueError: N <= 5.
    """
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    if len(x1) <= 5:
        raise ValueError(f"motion covariance needs more than 5 inliers, got {len(x1)}")
    t = np.asarray(t, np.float64) / np.linalg.norm(t)
    u1 = np.cross(t, [1.0, 0, 0] if abs(t[0]) < 0.9 else [0, 1.0, 0])
    u1 /= np.linalg.norm(u1)
    u2 = np.cross(t, u1)

    def residuals(p):
        tp = t + p[3] * u1 + p[4] * u2
        return sampson_errors(skew(tp / np.linalg.norm(tp)) @ axis_angle_to_rotmat(p[:3])[0] @ R, x1, x2)

    r0 = residuals(np.zeros(5))
    J = np.empty((len(x1), 5))
    for k in range(5):
        d = np.zeros(5)
        d[k] = step
        J[:, k] = (residuals(d) - residuals(-d)) / (2 * step)
    sigma2 = float(r0 @ r0) / (len(x1) - 5)
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return np.full((5, 5), np.inf), float("inf"), float("inf")
    d = np.clip(np.diag(cov), 0, None)
    return cov, float(np.sqrt(d[:3].mean())), float(np.sqrt(d[3:].mean()))


def two_view_motion(kp1: np.ndarray, desc1: np.ndarray, camera1: Camera, kp2: np.ndarray, desc2: np.ndarray,
                    camera2: Camera, ratio: float = 0.8, max_error_px: float = 1.0,
                    min_inliers: int = 30) -> TwoViewMotion | None:
    """Relative motion of frame 2 (cur) from frame 1 (prev) up to scale (module docstring).

    Args:
        kp1, kp2: (N, 2) keypoints, pixels (integer = pixel centre), raw (distorted) images.
        desc1, desc2: their descriptors.
        camera1, camera2: the frames' cameras (with distortion).
        ratio: ratio test of :func:`mutual_matches`.
        max_error_px: RANSAC threshold of the essential matrix, pixels.
        min_inliers: fewer inliers than this: no motion (None).
    Returns:
        :class:`TwoViewMotion`, or None when the pair gives no reliable motion (too few matches or inliers).
    """
    import pycolmap

    m = mutual_matches(desc1, desc2, ratio)
    if len(m) < max(min_inliers, 8):
        return None
    opts = pycolmap.RANSACOptions()
    opts.max_error = float(max_error_px)
    x1 = to_colmap_pixels(np.asarray(kp1, np.float64)[m[:, 0]])
    x2 = to_colmap_pixels(np.asarray(kp2, np.float64)[m[:, 1]])
    res = pycolmap.estimate_essential_matrix(x1, x2, camera1.to_pycolmap(), camera2.to_pycolmap(), opts)
    if res is None or int(res["num_inliers"]) < min_inliers:
        return None
    pose = res["cam2_from_cam1"]
    R = np.asarray(pose.rotation.matrix(), np.float64)
    t = np.asarray(pose.translation, np.float64)
    t = t / max(np.linalg.norm(t), 1e-12)
    inl = np.asarray(res["inlier_mask"], bool)
    b1 = camera1.bearings(np.asarray(kp1, np.float64)[m[inl, 0]])
    b2 = camera2.bearings(np.asarray(kp2, np.float64)[m[inl, 1]]) @ R  # cur bearings in the prev frame (R^T b)
    c2 = -R.T @ t  # cur camera centre in the prev frame
    # midpoint triangulation: lam1 b1 ~ c2 + lam2 b2
    bb = np.einsum("ij,ij->i", b1, b2)
    denom = np.maximum(1 - bb * bb, 1e-12)
    lam1 = ((b1 @ c2) - bb * (b2 @ c2)) / denom
    lam2 = (bb * (b1 @ c2) - (b2 @ c2)) / denom
    front = (lam1 > 0) & (lam2 > 0) & (1 - bb * bb > 1e-8)
    x1n = camera1.cam_from_img(np.asarray(kp1, np.float64)[m[inl, 0]])
    x2n = camera2.cam_from_img(np.asarray(kp2, np.float64)[m[inl, 1]])
    _, sig_rot, sig_dir = motion_covariance(R, t, x1n, x2n)
    return TwoViewMotion(R, t, lam1[front, None] * b1[front], np.asarray(kp1, np.float64)[m[inl, 0]][front],
                         int(len(m)), int(inl.sum()), sig_rot, sig_dir)
