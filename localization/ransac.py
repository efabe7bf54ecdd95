"""P3P-RANSAC with a fixed iteration count and weighted sampling (the baseline of Toft et al. ECCV 2018, Sec. 4;
Larsson et al. ICCV 2019, Sec. 5), and pycolmap's LO-RANSAC as an alternative estimator.

Our loop: draw ``num_iterations`` minimal sets of 3 matches (uniformly, or with per-match probabilities, which
GSMC uses), solve each with ``poselib.p3p`` (Persson & Nordberg's solver on bearing vectors), score every real
root by counting matches whose reprojection error is below the threshold and whose point lies in front of the
camera (cheirality), and keep the pose with most inliers. Each time a minimal sample beats the best count so far,
its pose is refined non-linearly on its inliers (``poselib.refine_absolute_pose``, Cauchy loss) and the inliers
re-collected (local optimisation as in LO-RANSAC, Chum et al. 2003); the best locally optimised pose is returned.

Optional early termination (``adaptive``, ours; off by default, the paper draws a fixed 10,000): after each batch
of samples, stop once ``k >= log(1 - confidence) / log(1 - w^3)`` samples were drawn, w the best inlier ratio so
far (Fischler & Bolles 1981; as COLMAP's and poselib's RANSAC). The bound assumes uniform sampling; with GSMC's
weights it is conservative when the weights favour inliers.

Errors are measured in "undistorted pixels": ``focal * ||x_proj - x_obs||`` on the normalised image plane, so
distortion is removed before P3P and the threshold keeps its usual meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib

from fgsn.utils.config import between, check_conf
from fgsn.utils.errors import ConfigError

default_conf = {
    "num_iterations": 10000,  # fixed number of minimal samples (the paper: 10,000); the maximum when adaptive
    "adaptive": False,  # stop early once `confidence` is reached (ours, off: the paper's fixed count)
    "confidence": 0.9999,  # adaptive: probability of having drawn at least one all-inlier minimal set
    "min_iterations": 256,  # adaptive: never fewer minimal samples than this
    "inlier_threshold_px": 8.0,  # reprojection error threshold, undistorted pixels
    "min_num_inliers": 10,  # fewer inliers than this: the query counts as not localized
    "batch_size": 256,  # minimal samples scored together (memory/speed trade-off only)
    "refine": True,  # non-linear refinement on the inliers (poselib, Cauchy loss)
    "refine_max_iterations": 100,  # Levenberg-Marquardt iterations of the refinement
    "refine_loss_scale_px": 1.0,  # Cauchy loss scale of the refinement, undistorted pixels (as pycolmap)
}

conf_checks = {  # fgsn.utils.config.check_conf
    "num_iterations": between(1, integer=True),
    "confidence": between(0, 1, lo_open=True, hi_open=True),
    "min_iterations": between(1, integer=True),
    "inlier_threshold_px": between(0, lo_open=True),
    "min_num_inliers": between(3, integer=True),
    "batch_size": between(1, integer=True),
    "refine_max_iterations": between(0, integer=True),
    "refine_loss_scale_px": between(0, lo_open=True),
}


def _merged(conf) -> dict:
    """``default_conf`` updated with ``conf`` (a dict of its keys), keys and values checked (ConfigError)."""
    c = {**default_conf, **(conf or {})}
    unknown = sorted(set(c) - set(default_conf))
    if unknown:
        raise ConfigError(f"RANSAC configuration: unknown key(s) {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(default_conf)})")
    check_conf(c, default_conf, conf_checks, "RANSAC configuration")
    return c


@dataclass
class RansacResult:
    """Outcome of a robust absolute-pose estimation.

    Attributes:
        success: a pose with at least ``min_num_inliers`` inliers was found.
        cam_from_world: (3, 4) world -> camera pose, or None.
        inliers: (N,) bool mask over the input matches.
        num_inliers: ``inliers.sum()``.
        num_iterations: minimal samples drawn.
    """

    success: bool
    cam_from_world: np.ndarray | None
    inliers: np.ndarray
    num_inliers: int
    num_iterations: int


def _check_inputs(bearings: np.ndarray, points3D: np.ndarray, weights: np.ndarray | None) -> None:
    if bearings.ndim != 2 or bearings.shape[1] != 3:
        raise ValueError(f"bearings must be (N, 3), got {bearings.shape}")
    if points3D.shape != bearings.shape:
        raise ValueError(f"points3D must be (N, 3) like bearings {bearings.shape}, got {points3D.shape}")
    if weights is not None and (weights.shape != (len(bearings),) or np.any(weights < 0) or not np.all(np.isfinite(weights))):
        raise ValueError(f"weights must be (N,) finite and non-negative, got shape {weights.shape}")


def sample_minimal_sets(n: int, num_samples: int, rng: np.random.Generator, weights: np.ndarray | None = None,
                        size: int = 3) -> np.ndarray:
    """Draw ``num_samples`` sets of ``size`` distinct indices in [0, n), each index with probability ∝ weights.

    Indices are drawn independently with probability ∝ weights and the sets with a repeated index are redrawn,
    so a set of distinct indices is drawn with probability proportional to the product of its weights.

    Returns:
        (num_samples, size) int array.
    Raises:
        ValueError: fewer than ``size`` indices with non-zero weight.
    """
    p = None
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if np.count_nonzero(weights) < size:
            raise ValueError(f"need at least {size} matches with non-zero weight, got {np.count_nonzero(weights)}")
        p = weights / weights.sum()
    elif n < size:
        raise ValueError(f"need at least {size} matches, got {n}")
    idx = rng.choice(n, size=(num_samples, size), p=p)
    for _ in range(1000):
        s = np.sort(idx, axis=1)
        bad = np.any(s[:, 1:] == s[:, :-1], axis=1)
        if not bad.any():
            break
        idx[bad] = rng.choice(n, size=(int(bad.sum()), size), p=p)
    return idx


def count_inliers(poses: np.ndarray, bearings: np.ndarray, points3D: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Score poses against matches.

    Args:
        poses: (P, 3, 4) cam_from_world.
        bearings: (N, 3) unit viewing rays in the camera frame.
        points3D: (N, 3) world points.
        threshold: max reprojection error on the normalised image plane (pixels / focal).
    Returns:
        counts: (P,) inliers per pose; masks: (P, N) bool inlier masks.
    """
    # Centre the points (exact, in float64) so that float32 arithmetic keeps precision for large coordinates.
    mean = points3D.mean(0)
    R = poses[:, :, :3]
    t = poses[:, :, 3] + R @ mean
    X = (points3D - mean).T.astype(np.float32)
    obs = (bearings[:, :2] / bearings[:, 2:3]).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # degenerate P3P roots far away: never inliers
        Xc = R.astype(np.float32) @ X + t.astype(np.float32)[:, :, None]  # (P, 3, N)
        z = Xc[:, 2]
        ex = Xc[:, 0] - obs[:, 0] * z
        ey = Xc[:, 1] - obs[:, 1] * z
        masks = (z > 0) & (ex * ex + ey * ey < np.float32(threshold**2) * z * z)
    return masks.sum(1), masks


def required_iterations(inlier_ratio: float, confidence: float, sample_size: int = 3) -> float:
    """Minimal samples needed to draw at least one all-inlier set with probability ``confidence`` when a
    fraction ``inlier_ratio`` of the matches are inliers: log(1 - confidence) / log(1 - inlier_ratio^sample_size)
    (inf for a zero ratio, 0 when every match is an inlier)."""
    p_good = float(inlier_ratio) ** sample_size
    if p_good <= 0:
        return float("inf")
    if p_good >= 1:
        return 0.0
    return float(np.log1p(-confidence) / np.log1p(-p_good))


def p3p_ransac(bearings: np.ndarray, points3D: np.ndarray, focal_px: float, rng: np.random.Generator,
               weights: np.ndarray | None = None, conf: dict | None = None) -> RansacResult:
    """Estimate ``cam_from_world`` from 2D-3D matches with P3P-RANSAC.

    Args:
        bearings: (N, 3) unit bearing vectors of the (undistorted) query keypoints, camera frame, z forward.
        points3D: (N, 3) matched world points, metres.
        focal_px: focal length used to express the threshold in pixels.
        rng: random generator (seeded by the caller so runs repeat exactly).
        weights: optional (N,) non-negative sampling weights (GSMC); uniform when None.
        conf: overrides of :data:`default_conf`.
    Returns:
        :class:`RansacResult`; ``success`` False for fewer than 4 matches or too few inliers.
    Raises:
        ValueError: inconsistent shapes or invalid weights.
    """
    c = _merged(conf)
    bearings = np.asarray(bearings, dtype=np.float64)
    points3D = np.asarray(points3D, dtype=np.float64)
    _check_inputs(bearings, points3D, weights)
    n = len(bearings)
    fail = RansacResult(False, None, np.zeros(n, bool), 0, 0)
    if n < 4 or (weights is not None and np.count_nonzero(weights) < 3):
        return fail
    thr = float(c["inlier_threshold_px"]) / float(focal_px)
    num_iter = int(c["num_iterations"])
    samples = sample_minimal_sets(n, num_iter, rng, weights)
    loss_scale = float(c["refine_loss_scale_px"]) / float(focal_px)

    def local_optimization(pose: np.ndarray, inliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refine on the inliers and re-collect them, twice (LO-RANSAC, Chum et al. 2003)."""
        for _ in range(2 if c["refine"] else 0):
            if inliers.sum() < 4:
                break
            refined = refine_pose(pose, bearings[inliers], points3D[inliers], loss_scale, int(c["refine_max_iterations"]))
            _, (new_inliers,) = count_inliers(refined[None], bearings, points3D, thr)
            if new_inliers.sum() < 0.5 * inliers.sum():  # diverged: keep the previous pose
                break
            pose, inliers = refined, new_inliers
        return pose, inliers

    best_sample_count, best_pose, best_inliers = -1, None, np.zeros(n, bool)
    p3p = poselib.p3p
    batch, drawn = int(c["batch_size"]), num_iter
    for start in range(0, num_iter, batch):
        if c["adaptive"] and start >= max(int(c["min_iterations"]),
                                          required_iterations(best_inliers.sum() / n, float(c["confidence"]))):
            drawn = start
            break
        poses = []
        for s in samples[start : start + batch]:
            for pose in p3p(bearings[s], points3D[s]):
                poses.append(pose.Rt)
        if not poses:
            continue
        poses = np.asarray(poses)
        counts, masks = count_inliers(poses, bearings, points3D, thr)
        i = int(np.argmax(counts))
        if counts[i] > best_sample_count:  # a new best minimal-sample model: optimise it locally
            best_sample_count = int(counts[i])
            pose, inliers = local_optimization(poses[i], masks[i])
            if inliers.sum() > best_inliers.sum() or best_pose is None:
                best_pose, best_inliers = pose, inliers
    num_inliers = int(best_inliers.sum())
    success = best_pose is not None and num_inliers >= int(c["min_num_inliers"])
    return RansacResult(success, best_pose if success else None, best_inliers, num_inliers, drawn)


def refine_pose(cam_from_world: np.ndarray, bearings: np.ndarray, points3D: np.ndarray, loss_scale: float,
                max_iterations: int = 100) -> np.ndarray:
    """Levenberg-Marquardt refinement of a pose on normalised-plane reprojection errors (poselib, Cauchy loss
    with scale ``loss_scale``, in normalised units = pixels / focal). Returns the (3, 4) refined cam_from_world."""
    x = bearings[:, :2] / bearings[:, 2:3]
    init = poselib.CameraPose()
    init.Rt = cam_from_world
    camera = {"model": "PINHOLE", "width": 0, "height": 0, "params": [1.0, 1.0, 0.0, 0.0]}
    pose, _ = poselib.refine_absolute_pose(x, points3D, init, camera,
                                           {"loss_type": "CAUCHY", "loss_scale": loss_scale, "max_iterations": max_iterations})
    return np.asarray(pose.Rt)


def pycolmap_ransac(points2D: np.ndarray, points3D: np.ndarray, camera, conf: dict | None = None) -> RansacResult:
    """pycolmap's LO-RANSAC + refinement (``estimate_and_refine_absolute_pose``), for comparison.

    Args:
        points2D: (N, 2) raw (distorted) keypoints, integer = pixel centre (converted to COLMAP's +0.5 here).
        points3D: (N, 3) world points.
        camera: :class:`reconstruction.datasets.Camera` (pycolmap handles the distortion).
        conf: ``inlier_threshold_px`` and ``min_num_inliers`` are used.
    """
    import pycolmap

    from reconstruction.camera import to_colmap_pixels

    c = _merged(conf)
    n = len(points2D)
    if n < 4:
        return RansacResult(False, None, np.zeros(n, bool), 0, 0)
    opts = pycolmap.AbsolutePoseEstimationOptions()
    opts.ransac.max_error = float(c["inlier_threshold_px"])
    ret = pycolmap.estimate_and_refine_absolute_pose(to_colmap_pixels(points2D), np.asarray(points3D, np.float64),
                                                     camera.to_pycolmap(), opts)
    if ret is None:
        return RansacResult(False, None, np.zeros(n, bool), 0, 0)
    inliers = np.asarray(ret["inlier_mask"], bool)
    num_inliers = int(inliers.sum())
    success = num_inliers >= int(c["min_num_inliers"])
    pose = np.asarray(ret["cam_from_world"].matrix()) if success else None
    return RansacResult(success, pose, inliers, num_inliers, int(ret.get("num_iterations", 0) or 0))
