"""Rigid-transform, quaternion and camera helpers (pure functions on NumPy arrays, no I/O).

Conventions used everywhere in the project:
    * Quaternions are (w, x, y, z), Hamilton, unit norm; ``qvec`` names a (4,) array in that order.
    * ``cam_from_world`` is a (3, 4) matrix [R | t] mapping world points to the camera frame:
      X_cam = R @ X_world + t. The camera centre is C = -R^T t.
    * Pixels: integer coordinates are pixel centres inside the project. COLMAP puts pixel centres at +0.5;
      convert only with :func:`reconstruction.camera.to_colmap_pixels` / :func:`~reconstruction.camera.from_colmap_pixels`.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def _check_shape(name: str, a: np.ndarray, shape: tuple) -> None:
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """(4,) or (N, 4) quaternions (w, x, y, z) -> (3, 3) or (N, 3, 3) rotation matrices (normalised first, after
    dividing by the largest component, so any finite non-zero quaternion works, 1e200 or 1e-200 included)."""
    q = np.asarray(qvec, dtype=np.float64)
    single = q.ndim == 1
    q = np.atleast_2d(q)
    _check_shape("qvec", q, (None, 4))
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero quaternion gives NaN, as before
        q = q / np.abs(q).max(axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=1,
    ).reshape(-1, 3, 3)
    return R[0] if single else R


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion (w, x, y, z) with w >= 0 (:func:`rotmats_to_qvecs`)."""
    R = np.asarray(R, dtype=np.float64)
    _check_shape("R", R, (3, 3))
    return rotmats_to_qvecs(R[None])[0]


def rotmats_to_qvecs(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (w, x, y, z), w >= 0 (batched Bar-Itzhack)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    r = {f"{i}{j}": R[:, i, j] for i in range(3) for j in range(3)}
    z = np.zeros(len(R))
    K = np.stack([
        np.stack([r["00"] - r["11"] - r["22"], z, z, z], 1),
        np.stack([r["01"] + r["10"], r["11"] - r["00"] - r["22"], z, z], 1),
        np.stack([r["02"] + r["20"], r["12"] + r["21"], r["22"] - r["00"] - r["11"], z], 1),
        np.stack([r["21"] - r["12"], r["02"] - r["20"], r["10"] - r["01"], r["00"] + r["11"] + r["22"]], 1),
    ], 1) / 3.0
    _, vecs = np.linalg.eigh(K)  # lower triangle used
    x, y, zq, w = np.moveaxis(vecs[:, :, -1], 1, 0)
    q = np.stack([w, x, y, zq], 1)
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def average_quaternions(qvecs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted rotation average of (N, 4) quaternions (w, x, y, z) -> (4,) unit quaternion, w >= 0.

    The eigenvector of the largest eigenvalue of sum_i w_i q_i q_i^T (Markley et al., "Averaging quaternions",
    JGCD 2007); insensitive to the sign of each q_i.
    """
    q = np.asarray(qvecs, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, dtype=np.float64)
    _, vecs = np.linalg.eigh(np.einsum("n,ni,nj->ij", w, q, q))
    m = vecs[:, -1]
    return -m if m[0] < 0 else m


def pose_from_qvec_center(qvec: np.ndarray, center: np.ndarray) -> np.ndarray:
    """World-to-camera quaternion and camera centre C (the CMU/NVM convention) -> (3, 4) cam_from_world."""
    R = qvec_to_rotmat(qvec)
    C = np.asarray(center, dtype=np.float64).reshape(3)
    return np.concatenate([R, (-R @ C)[:, None]], axis=1)


def pose_from_qvec_tvec(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """World-to-camera quaternion (w, x, y, z) and translation t -> (3, 4) cam_from_world."""
    return np.concatenate([qvec_to_rotmat(qvec), np.asarray(tvec, dtype=np.float64).reshape(3, 1)], axis=1)


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    """(3, 4) or (N, 3, 4) cam_from_world -> (3,) or (N, 3) camera centres in world coordinates."""
    T = np.asarray(cam_from_world, dtype=np.float64)
    R, t = T[..., :3], T[..., 3]
    return -np.einsum("...ji,...j->...i", R, t)


def invert_pose(b_from_a: np.ndarray) -> np.ndarray:
    """(3, 4) rigid transform b_from_a -> a_from_b."""
    R, t = b_from_a[:, :3], b_from_a[:, 3]
    return np.concatenate([R.T, (-R.T @ t)[:, None]], axis=1)


def compose(c_from_b: np.ndarray, b_from_a: np.ndarray) -> np.ndarray:
    """(3, 4) c_from_b, (3, 4) b_from_a -> (3, 4) c_from_a (composition right to left)."""
    R = c_from_b[:, :3] @ b_from_a[:, :3]
    t = c_from_b[:, :3] @ b_from_a[:, 3] + c_from_b[:, 3]
    return np.concatenate([R, t[:, None]], axis=1)


def pose_errors(cam_from_world_est: np.ndarray, cam_from_world_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position and rotation errors between estimated and ground-truth poses.

    Args:
        cam_from_world_est: (N, 3, 4) or (3, 4) estimated poses.
        cam_from_world_gt: same shape, ground truth.
    Returns:
        err_t_m: camera-centre distance ||C_est - C_gt|| in metres (world units).
        err_R_deg: rotation angle of R_gt^T R_est in degrees.
    """
    est = np.asarray(cam_from_world_est, dtype=np.float64)
    gt = np.asarray(cam_from_world_gt, dtype=np.float64)
    if est.shape != gt.shape or est.shape[-2:] != (3, 4):
        raise ValueError(f"pose arrays must both be (..., 3, 4), got {est.shape} and {gt.shape}")
    err_t = np.linalg.norm(camera_center(est) - camera_center(gt), axis=-1)
    trace = np.einsum("...ji,...ji->...", gt[..., :3], est[..., :3])
    err_R = np.degrees(np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0)))
    return err_t, err_R


def estimate_up(cams_from_world: np.ndarray, snap_deg: float = 15.0) -> np.ndarray:
    """World up direction from camera poses: the mean of the cameras' image-up directions (-y of the camera
    frame) in the world frame, snapped to the nearest world axis (+-x, +-y, +-z) when within ``snap_deg``.

    Valid for roughly level cameras (vehicle-mounted, or hand-held photos of buildings): cameras that all pitch
    down by a few degrees tilt the mean by as much, which the snapping removes for axis-aligned worlds.

    Args:
        cams_from_world: (N, 3, 4) poses, world -> camera.
        snap_deg: snapping tolerance, degrees (0 = never snap).
    Returns:
        (3,) unit vector, world frame.
    Raises:
        ValueError: no pose, a shape other than (N, 3, 4), or image-up directions that cancel out.
    """
    T = np.asarray(cams_from_world, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (3, 4) or len(T) == 0:
        raise ValueError(f"cams_from_world must be (N, 3, 4) with N > 0, got {T.shape}")
    m = -T[:, 1, :3].sum(0)  # -R^T e_y = image-up direction in the world frame, summed
    norm = np.linalg.norm(m)
    if norm < 1e-6 * len(T):
        raise ValueError("the cameras' image-up directions cancel out: the up axis is undetermined")
    m /= norm
    axis = np.zeros(3)
    i = int(np.argmax(np.abs(m)))
    axis[i] = np.sign(m[i])
    return axis if float(m @ axis) >= np.cos(np.radians(snap_deg)) else m


def horizontal_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit up u and two horizontal unit vectors a1, a2 with a1 x a2 = u (right-handed), all (3,)."""
    u = np.asarray(up, np.float64).reshape(3)
    u = u / np.linalg.norm(u)
    a1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    a1 /= np.linalg.norm(a1)
    return u, a1, np.cross(u, a1)


def gravity_in_camera(cams_from_world: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Mean direction of the world up axis in the camera frame over a set of poses (database images).

    Args:
        cams_from_world: (N, 3, 4) poses, world -> camera.
        up: (3,) world up direction.
    Returns:
        (3,) unit vector, camera frame.
    Raises:
        ValueError: empty input or shapes other than (N, 3, 4) / (3,).
    """
    T = np.asarray(cams_from_world, np.float64)
    if T.ndim != 3 or T.shape[1:] != (3, 4) or len(T) == 0:
        raise ValueError(f"cams_from_world must be (N, 3, 4) with N > 0, got {T.shape}")
    up = np.asarray(up, np.float64).reshape(3)
    g = (T[:, :, :3] @ (up / np.linalg.norm(up))).mean(0)
    return g / np.linalg.norm(g)


def skew(v: np.ndarray) -> np.ndarray:
    """(3,) vector -> (3, 3) cross-product matrix [v]x (so [v]x w = v x w)."""
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], np.float64)


def sampson_errors(E: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Signed Sampson errors of correspondences under an essential matrix (Hartley & Zisserman, Eq. 11.9).

    Args:
        E: (3, 3) essential matrix with x2^T E x1 = 0, e.g. [t]x R for X2 = R X1 + t.
        x1, x2: (N, 2) normalised image coordinates (undistorted, z = 1) in the first / second view.
    Returns:
        (N,) first-order geometric errors, normalised image units (about radians near the optical axis).
    """
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    Ex1, Etx2 = h1 @ E.T, h2 @ E
    num = np.einsum("ij,ij->i", h2, Ex1)
    den = np.sqrt(Ex1[:, 0] ** 2 + Ex1[:, 1] ** 2 + Etx2[:, 0] ** 2 + Etx2[:, 1] ** 2)
    return num / np.maximum(den, 1e-15)


def axis_angle_to_rotmat(omega: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle vectors (radians) -> (N, 3, 3) rotation matrices (scipy's Rodrigues)."""
    return Rotation.from_rotvec(np.asarray(omega, dtype=np.float64).reshape(-1, 3)).as_matrix()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed random (3, 3) rotation matrix."""
    q = rng.normal(size=4)
    return qvec_to_rotmat(q / np.linalg.norm(q))
