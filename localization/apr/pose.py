"""Quaternion and pose helpers on torch tensors (differentiable; pure functions, no I/O).

Quaternions are (w, x, y, z), Hamilton convention. A pose is (position, qvec): camera centre C (world frame)
and the world-to-camera rotation R as a quaternion, see :mod:`localization.apr`.
"""
from __future__ import annotations

import numpy as np
import torch

from reconstruction.geometry import camera_center, qvec_to_rotmat, rotmat_to_qvec

_EPS = 1e-8


def _check_last(name: str, x: torch.Tensor, n: int) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}), got {tuple(x.shape)}")


def qnormalize(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> unit quaternions on the w >= 0 hemisphere (q and -q are the same rotation)."""
    _check_last("q", q, 4)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign


def qmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (..., 4) quaternions (w, x, y, z); the rotation of b is applied first."""
    _check_last("a", a, 4)
    _check_last("b", b, 4)
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def qconj(q: torch.Tensor) -> torch.Tensor:
    """Conjugate (the inverse for unit quaternions) of (..., 4) quaternions."""
    _check_last("q", q, 4)
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def qrotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate (..., 3) vectors by (..., 4) unit quaternions: R(q) v."""
    _check_last("v", v, 3)
    qv = torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)
    return qmul(qmul(q, qv), qconj(q))[..., 1:]


def qlog(q: torch.Tensor) -> torch.Tensor:
    """Logarithm of unit quaternions as used by MapNet/AtLoc: (..., 4) -> (..., 3).

    log q = (v / ||v||) arccos(u) for q = (u, v), and 0 when ||v|| = 0. ``q`` is first moved to the u >= 0
    hemisphere so that q and -q give the same value (its norm is then half the rotation angle, in [0, pi/2]).
    """
    q = qnormalize(q)
    u, v = q[..., :1], q[..., 1:]
    n_sq = (v * v).sum(-1, keepdim=True)
    small = n_sq < 1e-12
    n = torch.sqrt(torch.where(small, torch.ones_like(n_sq), n_sq))  # safe: no infinite gradient at 0
    # arccos(u) = atan2(||v||, u) for unit q; atan2(n, u) / n -> 1 / u as n -> 0 (the limit keeps gradients finite)
    ratio = torch.where(small, 1.0 / u.clamp_min(_EPS), torch.atan2(n, u) / n)
    return v * ratio


def qexp(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`qlog`: (..., 3) -> (..., 4) unit quaternions (cos||w||, sin||w|| w/||w||)."""
    _check_last("w", w, 3)
    n_sq = (w * w).sum(-1, keepdim=True)
    small = n_sq < 1e-12
    n = torch.sqrt(torch.where(small, torch.ones_like(n_sq), n_sq))
    sinc = torch.where(small, 1.0 - n_sq / 6.0, torch.sin(n) / n)
    cos = torch.where(small, 1.0 - n_sq / 2.0, torch.cos(n))
    return torch.cat([cos, w * sinc], dim=-1)


def relative_pose(p0: torch.Tensor, q0: torch.Tensor, p1: torch.Tensor, q1: torch.Tensor):
    """Relative motion from pose 0 to pose 1 (MapNet's ``calc_vos_safe``).

    Args:
        p0, p1: (..., 3) camera centres, world frame.
        q0, q1: (..., 4) world-to-camera quaternions.
    Returns:
        dp: (..., 3) p1 - p0 expressed in camera 0's frame, R0 (p1 - p0).
        dq: (..., 4) cam1_from_cam0 = q1 * conj(q0), on the w >= 0 hemisphere.
    """
    dp = qrotate(q0, p1 - p0)
    dq = qnormalize(qmul(q1, qconj(q0)))
    return dp, dq


def pose_difference(p0: torch.Tensor, q0: torch.Tensor, p1: torch.Tensor, q1: torch.Tensor):
    """Relative motion from pose 0 to pose 1 as VLocNet defines it (Valada et al., ICRA 2018, Sec. III-A, the
    geometric consistency loss): (x_1 - x_0, q_0^-1 q_1).

    Applied to this package's world-to-camera quaternions, q_0^-1 q_1 is R_0^T R_1: the rotation from camera 0 to
    camera 1 written in world axes (R_0^T (R_1 R_0^T) R_0), so both parts are expressed in the world frame. Its
    angle is that of :func:`relative_pose`'s ``dq``; only the axis's frame differs.

    Args:
        p0, p1: (..., 3) camera centres, world frame.
        q0, q1: (..., 4) unit world-to-camera quaternions (w, x, y, z).
    Returns:
        dp: (..., 3) p1 - p0, world frame.
        dq: (..., 4) conj(q0) * q1, on the w >= 0 hemisphere.
    """
    _check_last("p0", p0, 3)
    _check_last("p1", p1, 3)
    return p1 - p0, qnormalize(qmul(qconj(q0), q1))


def lookat_point(p: torch.Tensor, q: torch.Tensor, distance: float = 1.0) -> torch.Tensor:
    """The world point ``distance`` units in front of the camera along its optical axis.

    This project's cameras look along +z (OpenCV/COLMAP), so the point is C + R^T (0, 0, d); this is
    ``[R|t]^-1 (0, 0, d)`` (Ward et al. write (0, 0, -1) for an OpenGL camera looking along -z).

    Args:
        p: (..., 3) camera centres. q: (..., 4) world-to-camera quaternions. distance: same unit as p.
    """
    axis = torch.zeros_like(p)
    axis[..., 2] = distance
    return p + qrotate(qconj(qnormalize(q)), axis)


# ---------------------------------------------------------------------------------------------------------------
# NumPy conversions at the dataset / benchmark boundary
# ---------------------------------------------------------------------------------------------------------------


def pose_to_cam_from_world(position: np.ndarray, qvec: np.ndarray) -> np.ndarray:
    """(3,) camera centre and (4,) world-to-camera quaternion -> (3, 4) cam_from_world."""
    R = qvec_to_rotmat(np.asarray(qvec, dtype=np.float64))
    C = np.asarray(position, dtype=np.float64).reshape(3)
    return np.concatenate([R, (-R @ C)[:, None]], axis=1)


def cam_from_world_to_pose(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, 4) cam_from_world -> (3,) camera centre and (4,) world-to-camera quaternion with w >= 0."""
    T = np.asarray(cam_from_world, dtype=np.float64)
    if T.shape != (3, 4):
        raise ValueError(f"cam_from_world must have shape (3, 4), got {T.shape}")
    return camera_center(T), rotmat_to_qvec(T[:, :3])
