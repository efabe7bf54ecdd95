"""Loss terms of the APR papers, as pure functions of predicted and ground-truth poses (torch, differentiable).

Every function takes batched tensors with the pose convention of :mod:`localization.apr` (positions (..., 3),
normalised world frame; quaternions (..., 4), world-to-camera, (w, x, y, z)) and returns a scalar: the mean
over all leading dimensions.
"""
from __future__ import annotations

import torch

from .pose import lookat_point, pose_difference, qlog, qnormalize, relative_pose


def posenet_loss(p_hat: torch.Tensor, q_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
                 alpha: float, beta: float) -> torch.Tensor:
    """The original PoseNet loss of one regressor (Kendall et al., ICCV 2015): alpha ||p - p^|| + beta ||q - q^/||q^|| ||.

    Args:
        p_hat, p: (..., 3) predicted / true positions. q_hat, q: (..., 4) predicted (any norm) / true unit
            quaternions; both are put on the w >= 0 hemisphere first.
        alpha, beta: weights of the position and orientation terms.
    """
    err_p = (p_hat - p).norm(dim=-1)
    err_q = (qnormalize(q_hat) - qnormalize(q)).norm(dim=-1)
    return (alpha * err_p + beta * err_q).mean()


def geometric_loss(p_hat: torch.Tensor, q_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor, beta: float,
                   distance: float = 1.0, beta_factor: float = 1.5) -> torch.Tensor:
    """The geometric PoseNet loss of Ward et al. (docs/apr.md, "Losses"), one regressor.

    L = 1.5 beta ||q^ - q|| + ||d|| + ||d||^2 s, with a = the point ``distance`` units along the true camera's
    viewing direction and a^ the same for the predicted pose (:func:`~localization.apr.pose.lookat_point`),
    d = a - a^ and s = 1 - cos(a^, d) (the angle between the predicted look-at point, as a vector from the
    world origin = the training positions' mean after normalisation, and the error). s is taken as 1 where
    d or a^ is zero (the term is then 0 anyway).

    Args:
        p_hat, p: (..., 3) positions. q_hat, q: (..., 4) quaternions (q_hat normalised here).
        beta: the PoseNet orientation weight of this regressor. distance: look-at distance, position units.
        beta_factor: the 1.5 of the paper.
    """
    q_hat = qnormalize(q_hat)
    q = qnormalize(q)
    a = lookat_point(p, q, distance)
    a_hat = lookat_point(p_hat, q_hat, distance)
    d = a - a_hat
    dn = d.norm(dim=-1)
    cos = torch.nn.functional.cosine_similarity(a_hat, d, dim=-1, eps=1e-12)
    s = 1.0 - cos
    err_q = (q_hat - q).norm(dim=-1)
    return (beta_factor * beta * err_q + dn + dn.square() * s).mean()


def learned_weighting(err_x: torch.Tensor, err_q: torch.Tensor, s_x: torch.Tensor, s_q: torch.Tensor) -> torch.Tensor:
    """Homoscedastic-uncertainty weighting (Kendall & Cipolla, CVPR 2017): L_x e^-s_x + s_x + L_q e^-s_q + s_q.

    Args:
        err_x, err_q: scalar position / orientation losses. s_x, s_q: learned scalar log-weights.
    """
    return err_x * torch.exp(-s_x) + s_x + err_q * torch.exp(-s_q) + s_q


def atloc_errors(p_hat: torch.Tensor, logq_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
    """AtLoc's L1 errors: mean ||p - p^||_1 and mean ||log q - log q^||_1 (log q on the w >= 0 hemisphere).

    Args:
        p_hat, p: (..., 3). logq_hat: (..., 3) predicted log-quaternion. q: (..., 4) true quaternion.
    Returns:
        err_p, err_q: scalars.
    """
    err_p = (p_hat - p).abs().sum(-1).mean()
    err_q = (logq_hat - qlog(q)).abs().sum(-1).mean()
    return err_p, err_q


def relative_errors(p_hat: torch.Tensor, q_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor, norm: str = "l1"):
    """Errors of the camera-frame relative poses between consecutive frames of windows (AtLoc+'s ``relative:
    camera`` option, ours; the AtLoc+ and VLocNet defaults are :func:`pairwise_relative_errors` and
    :func:`consecutive_motion_errors`).

    Args:
        p_hat, p: (B, T, 3) predicted / true positions of T >= 2 frames in temporal order.
        q_hat, q: (B, T, 4) predicted / true quaternions.
        norm: ``"l1"`` (AtLoc+: L1 on relative position and on the log of the relative rotation) or
            ``"l2"`` (Euclidean norms on relative position and relative quaternion; VLocNet's term before issue 14).
    Returns:
        err_p, err_q: scalars, means over the B (T - 1) pairs.
    """
    if p_hat.ndim != 3 or p_hat.shape[1] < 2:
        raise ValueError(f"relative errors need (B, T>=2, 3) windows, got {tuple(p_hat.shape)}")
    dp_hat, dq_hat = relative_pose(p_hat[:, :-1], qnormalize(q_hat[:, :-1]), p_hat[:, 1:], qnormalize(q_hat[:, 1:]))
    dp, dq = relative_pose(p[:, :-1], q[:, :-1], p[:, 1:], q[:, 1:])
    if norm == "l1":
        return (dp_hat - dp).abs().sum(-1).mean(), (qlog(dq_hat) - qlog(dq)).abs().sum(-1).mean()
    if norm == "l2":
        return (dp_hat - dp).norm(dim=-1).mean(), (dq_hat - dq).norm(dim=-1).mean()
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def consecutive_motion_errors(p_hat: torch.Tensor, q_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
    """VLocNet's geometric consistency terms (Valada et al., ICRA 2018, Sec. III-A): the error of the relative
    motion between consecutive predictions against that of the ground truth,
    ||(x_t - x_{t-1}) - (x^_t - x^_{t-1})||_2 and ||q_{t-1}^-1 q_t - q^_{t-1}^-1 q^_t||_2
    (:func:`~localization.apr.pose.pose_difference`: world-frame translation and rotation differences; both
    relative quaternions on the w >= 0 hemisphere). VLocNet adds them to L_x and L_q.

    Args:
        p_hat, p: (B, T, 3) predicted / true positions of T >= 2 consecutive frames in temporal order.
        q_hat, q: (B, T, 4) predicted (any norm, normalised here) / true quaternions.
    Returns:
        err_p, err_q: scalars, means over the B (T - 1) pairs.
    Raises:
        ValueError: fewer than 2 frames or a wrong shape.
    """
    if p_hat.ndim != 3 or p_hat.shape[1] < 2 or p_hat.shape != p.shape:
        raise ValueError(f"consecutive motion errors need (B, T>=2, 3) windows, got {tuple(p_hat.shape)} and "
                         f"{tuple(p.shape)}")
    q_hat = qnormalize(q_hat)
    dp_hat, dq_hat = pose_difference(p_hat[:, :-1], q_hat[:, :-1], p_hat[:, 1:], q_hat[:, 1:])
    dp, dq = pose_difference(p[:, :-1], q[:, :-1], p[:, 1:], q[:, 1:])
    return (dp_hat - dp).norm(dim=-1).mean(), (dq_hat - dq).norm(dim=-1).mean()


def pairwise_relative_errors(p_hat: torch.Tensor, logq_hat: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
    """MapNet's relative-pose errors over all frame pairs of windows (Brahmbhatt et al., CVPR 2018; AtLoc+).

    The relative pose of frames i and j is the world-frame difference v_ij = (x_i - x_j, w_i - w_j) of the
    positions x and of the log-quaternions w = log q (:func:`~localization.apr.pose.qlog`), taken from the
    absolute poses (predicted: ``p_hat``, ``logq_hat`` as regressed, not re-normalised). The L1 error
    ||v_ij - v^_ij||_1 is the same for (i, j) and (j, i), so the mean over the T (T - 1) / 2 pairs i < j used
    here equals the mean over all ordered pairs i != j of the paper's sum. The errors do not depend on whether
    q is world-to-camera (this package) or camera-to-world (MapNet): log q^-1 = -log q on the w >= 0 hemisphere.

    Args:
        p_hat, p: (B, T, 3) predicted / true positions of windows of T >= 2 frames (normalised world frame).
        logq_hat: (B, T, 3) predicted log-quaternions. q: (B, T, 4) true quaternions (w, x, y, z).
    Returns:
        err_p, err_q: scalars, means of ||(x_i - x_j) - (x^_i - x^_j)||_1 and ||(w_i - w_j) - (w^_i - w^_j)||_1
        over the B T (T - 1) / 2 pairs.
    Raises:
        ValueError: if the inputs are not (B, T >= 2, 3) / (B, T, 4) windows of the same B, T.
    """
    if p_hat.ndim != 3 or p_hat.shape[1] < 2 or p_hat.shape[-1] != 3:
        raise ValueError(f"pairwise relative errors need (B, T>=2, 3) windows, got {tuple(p_hat.shape)}")
    B, T = p_hat.shape[:2]
    for name, x, n in (("logq_hat", logq_hat, 3), ("p", p, 3), ("q", q, 4)):
        if tuple(x.shape) != (B, T, n):
            raise ValueError(f"{name} must have shape {(B, T, n)}, got {tuple(x.shape)}")
    i, j = torch.triu_indices(T, T, offset=1, device=p_hat.device)  # all pairs i < j

    def _pair_error(a_hat, a):
        return ((a_hat[:, i] - a_hat[:, j]) - (a[:, i] - a[:, j])).abs().sum(-1).mean()

    return _pair_error(p_hat, p), _pair_error(logq_hat, qlog(q))
