"""The PFSL particle filter as pure functions (NumPy, no I/O, no configuration files): particles, motion model,
semantic observation model, resampling, and :func:`run_filter` over one sequence.

After Stenborg et al., "Long-term visual localization using semantically segmented images", ICRA 2018 (Sec. III);
the method, its options and what is ours are described in :mod:`localization.pfsl`, which runs this filter on
a benchmark's query sequences.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from reconstruction.camera import Camera
from reconstruction.geometry import (average_quaternions, axis_angle_to_rotmat, camera_center, qvec_to_rotmat,
                                    rotmats_to_qvecs)
from reconstruction.semantics import labels_at
from reconstruction.visibility import visible


# ============================================================================================================
def perturb_particles(R: np.ndarray, C: np.ndarray, rng: np.random.Generator, sigma_t_m, sigma_rot_rad: float,
                      up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian pose noise to particles.

    Args:
        R: (N, 3, 3) cam_from_world rotations.
        C: (N, 3) camera centres, world frame, metres.
        rng: random generator.
        sigma_t_m: scalar or (N,) translation sigma per axis, metres.
        sigma_rot_rad: rotation sigma, radians (per axis in 6-DoF; of the yaw about ``up`` in 3-DoF).
        up: (3,) unit world up for the 3-DoF state (noise on horizontal position and yaw only); None = 6-DoF.
    Returns:
        (R', C'): perturbed copies, same shapes.
    """
    n = len(R)
    sig_t = np.broadcast_to(np.asarray(sigma_t_m, dtype=np.float64), (n,))[:, None]
    dC = rng.normal(size=(n, 3)) * sig_t
    if up is None:
        Rn = axis_angle_to_rotmat(rng.normal(size=(n, 3)) * sigma_rot_rad)
        return Rn @ R, C + dC
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    dC -= (dC @ up)[:, None] * up  # horizontal only
    Ryaw = axis_angle_to_rotmat(rng.normal(size=(n, 1)) * sigma_rot_rad * up)  # world_from_cam' = Ryaw world_from_cam
    return R @ np.transpose(Ryaw, (0, 2, 1)), C + dC


def init_particles(cam_from_world: np.ndarray, num_particles: int, rng: np.random.Generator, sigma_t_m: float,
                   sigma_rot_rad: float, up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Particles spread around one pose, or around poses drawn uniformly from a set (a prior such as the database
    poses of a map); see :func:`perturb_particles` for ``up``.

    Args:
        cam_from_world: (3, 4) pose or (D, 3, 4) poses, world -> camera, metres.
    Returns:
        R: (N, 3, 3) cam_from_world rotations; C: (N, 3) camera centres, world frame.
    """
    T = np.asarray(cam_from_world, dtype=np.float64)
    if T.shape[-2:] != (3, 4) or T.ndim not in (2, 3) or (T.ndim == 3 and len(T) == 0):
        raise ValueError(f"cam_from_world must be (3, 4) or (D, 3, 4), got {T.shape}")
    T = np.repeat(T[None], num_particles, 0) if T.ndim == 2 else T[rng.integers(len(T), size=num_particles)]
    R = T[:, :, :3].copy()
    C = -np.einsum("nji,nj->ni", R, T[:, :, 3])
    return perturb_particles(R, C, rng, sigma_t_m, sigma_rot_rad, up)


def align_gravity(R: np.ndarray, up: np.ndarray, gravity_cam: np.ndarray) -> np.ndarray:
    """Rotate each camera minimally (about an axis in the camera frame) so that world ``up`` maps to ``gravity_cam``.

    Args:
        R: (N, 3, 3) cam_from_world rotations.
        up: (3,) unit world up.
        gravity_cam: (3,) or (N, 3) up direction wanted in the camera frame.
    Returns:
        (N, 3, 3) rotations with ``R' @ up = gravity_cam``; the yaw about ``up`` is kept.
    """
    a = R @ up  # (N, 3) current up in the camera frame
    b = np.broadcast_to(np.asarray(gravity_cam, np.float64), a.shape)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    v = np.cross(a, b)
    c = np.einsum("ni,ni->n", a, b)
    V = np.zeros((len(R), 3, 3))
    V[:, 0, 1], V[:, 0, 2], V[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    V[:, 1, 0], V[:, 2, 0], V[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    Ra = np.eye(3) + V + (V @ V) / np.maximum(1 + c, 1e-9)[:, None, None]
    return Ra @ R


def predict(R: np.ndarray, C: np.ndarray, cur_from_prev: np.ndarray, rng: np.random.Generator,
            sigma_t_per_m: float, sigma_t_min_m: float, sigma_rot_rad: float,
            up: np.ndarray | None = None, gravity_cam: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Motion model: compose the odometry increment on every particle, then add noise.

    In the 3-DoF state (``up`` given) the increment is reduced to its planar part: the vertical displacement is
    dropped (constant camera height) and the camera's tilt is reset so that ``R @ up = gravity_cam`` (known
    gravity), keeping only the yaw change.

    Args:
        R: (N, 3, 3) cam_from_world rotations of the previous frame.
        C: (N, 3) previous camera centres, world frame, metres.
        cur_from_prev: (3, 4) odometry, previous camera frame -> current camera frame, metres.
        rng: random generator.
        sigma_t_per_m: translation sigma per metre travelled (the increment's length), metres / metre.
        sigma_t_min_m: translation sigma added to every step, metres.
        sigma_rot_rad: rotation sigma, radians.
        up: (3,) unit world up for the 3-DoF state; None = 6-DoF.
        gravity_cam: (3,) up in the camera frame for the 3-DoF state; default: each particle's own before the step.
    Returns:
        (R, C) of the current frame.
    """
    T = np.asarray(cur_from_prev, dtype=np.float64)
    if T.shape != (3, 4):
        raise ValueError(f"cur_from_prev must be (3, 4), got {T.shape}")
    Rd, td = T[:, :3], T[:, 3]
    d_prev = -Rd.T @ td  # current camera centre in the previous camera frame
    disp = np.einsum("nji,j->ni", R, d_prev)  # displacement, world frame
    R_new = Rd @ R
    if up is not None:
        up = np.asarray(up, np.float64) / np.linalg.norm(up)
        disp -= (disp @ up)[:, None] * up
        R_new = align_gravity(R_new, up, R @ up if gravity_cam is None else gravity_cam)
    sigma_t = sigma_t_per_m * np.linalg.norm(d_prev) + sigma_t_min_m
    return perturb_particles(R_new, C + disp, rng, sigma_t, sigma_rot_rad, up)


def project_visible(R: np.ndarray, C: np.ndarray, xyz: np.ndarray, d_min: np.ndarray, d_max: np.ndarray,
                    view_dir: np.ndarray, view_spread: np.ndarray, camera: Camera,
                    distance_scale: Sequence[float] = (0.5, 1.5), cone_margin_rad: float = 0.26,
                    min_depth_m: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Project the map points visible from each particle into the image (no occlusion test).

    A point is visible when the shared visibility model holds (:func:`reconstruction.visibility.visible`:
    ``d_min * s0 <= |C - X| <= d_max * s1``, the angle between ``C - X`` and its mean viewing direction at most
    the half-angle ``view_spread + cone_margin_rad``), its depth exceeds ``min_depth_m`` and it projects inside
    the image (:meth:`reconstruction.camera.Camera.project`, fold-over guard included).

    Args:
        R: (P, 3, 3) cam_from_world rotations.
        C: (P, 3) camera centres, world frame, metres.
        xyz: (M, 3) points, world frame, metres.
        d_min, d_max: (M,) distances to the observing database cameras, metres.
        view_dir: (M, 3) unit mean direction point -> observing cameras, world frame.
        view_spread: (M,) largest angle between an observing direction and ``view_dir``, radians.
        camera: intrinsics (with distortion).
    Returns:
        uv: (P, M, 2) pixel coordinates (x, y), integer = pixel centre; undefined where not visible.
        visible: (P, M) bool.
    """
    P, M = len(R), len(xyz)
    if R.shape != (P, 3, 3) or C.shape != (P, 3) or xyz.shape != (M, 3):
        raise ValueError(f"expected R (P, 3, 3), C (P, 3), xyz (M, 3); got {R.shape}, {C.shape}, {xyz.shape}")
    diff = C[:, None, :] - xyz[None]  # (P, M, 3) point -> camera
    vis = visible(np.einsum("pmk,pmk->pm", diff, diff), np.einsum("pmk,mk->pm", diff, view_dir), d_min, d_max,
                  view_spread, distance_scale, cone_margin_rad)
    Xc = -np.einsum("pij,pmj->pmi", R, diff)  # R (X - C)
    vis &= Xc[..., 2] > min_depth_m
    uv = np.zeros((P, M, 2))
    if vis.any():  # project only the candidates
        uv_vis, ok = camera.project(Xc[vis], min_depth_m)
        uv[vis] = uv_vis
        vis[vis] = ok & camera.in_image(uv_vis)
    return uv, vis


def observed_labels(label_image: np.ndarray, uv: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Labels of a (H, W) label image at (P, M, 2) projections; (P, M) int64, -1 where not visible."""
    return np.where(visible, labels_at(label_image, uv.reshape(-1, 2)).reshape(uv.shape[:-1]), -1)


def label_frequencies(label_image: np.ndarray, num_classes: int, q_min: float = 1e-3) -> np.ndarray:
    """(K,) fraction of the image's pixels with each label, floored at ``q_min`` (the background model q)."""
    counts = np.bincount(np.asarray(label_image).ravel(), minlength=num_classes)[:num_classes]
    return np.maximum(counts / max(counts.sum(), 1), q_min)


def label_log_likelihood(observed: np.ndarray, map_label: np.ndarray, q: np.ndarray, alpha: float,
                         tau: float) -> np.ndarray:
    """Tempered label-agreement log-likelihood of each particle (Stenborg et al. 2018; tau ours).

    ``tau * sum_i log[(alpha 1(s_i = c_i) + (1 - alpha) q(s_i)) / q(s_i)]`` over the visible points i, i.e.
    ``log(alpha / q(s_i) + 1 - alpha)`` for an agreeing point and ``log(1 - alpha)`` for a disagreeing one.

    Args:
        observed: (P, M) query label s_i at each projection, -1 where not visible.
        map_label: (M,) point labels c_i.
        q: (K,) query label frequencies (> 0).
        alpha: label reproduction rate in (0, 1).
        tau: tempering factor (> 0).
    Returns:
        (P,) log-likelihoods.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    valid = observed >= 0
    agree = valid & (observed == map_label[None])
    qs = q[np.clip(observed, 0, len(q) - 1)]
    term = np.where(agree, np.log(alpha / qs + 1 - alpha), np.log(1 - alpha))
    return tau * np.where(valid, term, 0.0).sum(axis=1)


def agreement_log_likelihood(observed: np.ndarray, map_label: np.ndarray, lam: float) -> np.ndarray:
    """``lambda * n_agree / n_visible`` per particle (0 when nothing is visible); shapes as in
    :func:`label_log_likelihood`."""
    valid = observed >= 0
    n_agree = (valid & (observed == map_label[None])).sum(axis=1)
    return lam * n_agree / np.maximum(valid.sum(axis=1), 1)


def normalise_log_weights(log_w: np.ndarray) -> np.ndarray:
    """(N,) log-weights -> (N,) weights summing to 1 (uniform if none is finite)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    if not finite.any():
        return np.full(len(log_w), 1.0 / len(log_w))
    w = np.where(finite, np.exp(log_w - log_w[finite].max()), 0.0)
    return w / w.sum()


def effective_sample_size(weights: np.ndarray) -> float:
    """ESS = 1 / sum(w_i^2) of (N,) normalised weights; N for uniform weights, 1 for a single particle."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return float(1.0 / np.sum(w * w))


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: (N,) weights -> (N,) particle indices.

    One uniform offset u ~ U[0, 1/N); positions u + k/N; each particle i is drawn floor(N w_i) or
    ceil(N w_i) times.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    positions = (rng.random() + np.arange(n)) / n
    return np.searchsorted(cum, positions, side="right")


def mean_pose(R: np.ndarray, C: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean position and quaternion-averaged rotation of particles -> (3, 4) cam_from_world."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    Rm = qvec_to_rotmat(average_quaternions(rotmats_to_qvecs(R), w))
    Cm = w @ C
    return np.concatenate([Rm, (-Rm @ Cm)[:, None]], axis=1)


def label_consistency(label_pairs: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Per-label n_corr / (n_corr + n_noncorr) over correspondences: the share of a label's correspondences whose
    two ends carry the same label, a cross-season consistency measure of ours (``stationary.labels=consistency``;
    the paper's rule is :func:`correspondence_pixel_ratio`).

    Args:
        label_pairs: per image pair, ((N,) labels at the reference points, (N,) labels at the corresponding
            target points); a correspondence counts for its reference label.
        num_classes: K.
    Returns:
        (K,) consistency ratio per label, NaN for labels without a correspondence.
    """
    n_corr, n_all = np.zeros(num_classes), np.zeros(num_classes)
    for a, b in label_pairs:
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        n_all += np.bincount(a, minlength=num_classes)[:num_classes]
        n_corr += np.bincount(a[a == b], minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_all > 0, n_corr / np.maximum(n_all, 1), np.nan)


def correspondence_pixel_ratio(label_pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                               label_images: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """p_c(c) / p_p(c) per label: the FGSN paper's stationarity rule (Larsson et al., ICCV 2019, supplementary
    C.2: cluster c is stationary when the ratio exceeds 0.2).

    Args:
        label_pairs: per image pair, ((N,) labels at the reference points, (N,) labels at the target points);
            p_c is the distribution of the labels over both ends of all correspondences.
        label_images: the label maps of the pairs' images, each once; p_p is the distribution over their pixels.
        num_classes: K.
    Returns:
        (K,) ratio, NaN for labels absent from the pixels.
    """
    n_c, n_p = np.zeros(num_classes), np.zeros(num_classes)
    for a, b in label_pairs:
        for x in (a, b):
            n_c += np.bincount(np.asarray(x, np.int64), minlength=num_classes)[:num_classes]
    for img in label_images:
        n_p += np.bincount(np.asarray(img, np.int64).ravel(), minlength=num_classes)[:num_classes]
    p_c, p_p = n_c / max(n_c.sum(), 1), n_p / max(n_p.sum(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p_p > 0, p_c / np.where(p_p > 0, p_p, 1), np.nan)


class MapPoints:
    """The labelled map points the observation model uses (arrays as in :func:`project_visible`, plus
    ``label`` (M,) int64 and ``num_classes``). Built from a ``LabelledMap`` with :meth:`from_labelled_map`."""

    def __init__(self, xyz, label, d_min, d_max, view_dir, view_spread, num_classes: int):
        self.xyz = np.asarray(xyz, np.float64)
        self.label = np.asarray(label, np.int64)
        self.d_min, self.d_max = np.asarray(d_min, np.float64), np.asarray(d_max, np.float64)
        self.view_dir, self.view_spread = np.asarray(view_dir, np.float64), np.asarray(view_spread, np.float64)
        self.num_classes = int(num_classes)

    @classmethod
    def from_labelled_map(cls, lmap, labels: Sequence[int] | None = None) -> "MapPoints":
        """Points of a ``LabelledMap`` with a label (>= 0), restricted to ``labels`` when given."""
        keep = lmap.label >= 0
        if labels is not None:
            keep &= np.isin(lmap.label, np.asarray(list(labels), np.int64))
        return cls(lmap.xyz[keep], lmap.label[keep], lmap.d_min[keep], lmap.d_max[keep], lmap.view_dir[keep],
                   lmap.view_spread[keep], lmap.num_classes)

    def subset(self, idx: np.ndarray) -> "MapPoints":
        return MapPoints(self.xyz[idx], self.label[idx], self.d_min[idx], self.d_max[idx], self.view_dir[idx],
                         self.view_spread[idx], self.num_classes)


def _observe(R, C, points: MapPoints, label_image, camera, conf, rng):
    """Log-likelihood (P,) of each particle and the number of points it sees (P,)."""
    vconf, lconf = conf["visibility"], conf["likelihood"]
    centre = C.mean(axis=0)
    reach = np.linalg.norm(points.xyz - centre, axis=1) - np.linalg.norm(C - centre, axis=1).max()
    cand = np.flatnonzero(reach <= points.d_max * vconf["distance_scale"][1])
    if len(cand) > vconf["max_points"]:
        cand = np.sort(rng.choice(cand, int(vconf["max_points"]), replace=False))
    pts = points.subset(cand)
    uv, vis = project_visible(R, C, pts.xyz, pts.d_min, pts.d_max, pts.view_dir, pts.view_spread, camera,
                              vconf["distance_scale"], np.radians(vconf["cone_margin_deg"]), vconf["min_depth_m"])
    obs = observed_labels(label_image, uv, vis)
    if lconf["model"] == "label":
        q = label_frequencies(label_image, max(points.num_classes, int(label_image.max(initial=0)) + 1),
                              lconf["q_min"])
        ll = label_log_likelihood(obs, pts.label, q, lconf["alpha"], lconf["tau"])
    elif lconf["model"] == "agreement":
        ll = agreement_log_likelihood(obs, pts.label, lconf["lam"])
    else:
        raise ValueError(f"likelihood.model must be 'label' or 'agreement', got {lconf['model']!r}")
    n_vis = vis.sum(axis=1)
    n_agree = ((obs >= 0) & (obs == pts.label[None])).sum(axis=1)
    return ll, n_vis, n_agree


def run_filter(frames: Sequence[dict], points: MapPoints, conf: dict, rng: np.random.Generator,
               single_image: Callable[[int], tuple[np.ndarray | None, dict]],
               up: np.ndarray | None = None, gravity_cam: np.ndarray | None = None) -> list[dict]:
    """Run PFSL over one sequence.

    Args:
        frames: in time order, each a dict with ``labels`` ((H, W) int label image of the query),
            ``camera`` (:class:`Camera`) and ``cur_from_prev`` ((3, 4) odometry from the previous frame, metres;
            None for the first frame or a gap; or a callable: previous mean pose (3, 4) cam_from_world -> (3, 4)
            or None, for odometry whose metric scale comes from the filter's state, e.g. visual odometry; the
            callable may return ((3, 4), noise) with noise = {"sigma_t_m", "sigma_rot_rad"} the step's own
            prediction noise, used instead of ``motion``'s per-metre and rotation sigmas, ``motion.sigma_t_min_m``
            added to the translation sigma).
        points: the labelled map points (stationary labels only).
        conf: :data:`default_conf` as a plain dict (keys used: num_particles, state, motion, likelihood,
            visibility, resample_ess, init, reinit).
        rng: random generator (the whole run is deterministic given it).
        single_image: frame index -> (cam_from_world (3, 4) or None, info dict): the single-image estimate used
            to (re)initialise; or (D, 3, 4) poses: a prior the particles are drawn around (``init.prior_sigma_*``).
        up: (3,) world up, used when ``conf["state"] == "3dof"`` (default +z).
        gravity_cam: (3,) up direction in the camera frame for the 3-DoF state (e.g. from the database); default:
            that of each (re)initialisation estimate. The camera height is that of the estimate.
    Returns:
        One dict per frame: ``success``, ``cam_from_world`` ((3, 4) or None), ``event`` (init | reinit | track |
        uninitialised), ``ess``, ``resampled``, ``n_visible`` / ``n_agree`` (map points seen / agreeing from the
        mean pose), ``diverged`` (frames in a row failing the divergence test), ``init_info`` (when an
        initialisation was attempted), ``reason`` on failure.
    """
    if conf["state"] not in ("3dof", "6dof"):
        raise ValueError(f"state must be '3dof' or '6dof', got {conf['state']!r}")
    up_ = None if conf["state"] == "6dof" else np.asarray(up if up is not None else (0.0, 0.0, 1.0), np.float64)
    N, mc, ic, rc = int(conf["num_particles"]), conf["motion"], conf["init"], conf["reinit"]
    R = C = log_w = g_cam = None
    bad = 0
    out = []

    def start(pose):
        nonlocal g_cam
        prior = np.ndim(pose) == 3  # a set of poses (e.g. the map's database poses), not one estimate
        sig_t, sig_r = (ic["prior_sigma_t_m"], ic["prior_sigma_rot_rad"]) if prior else (ic["sigma_t_m"],
                                                                                          ic["sigma_rot_rad"])
        R0, C0 = init_particles(pose, N, rng, sig_t, sig_r, up_)
        if up_ is not None:
            if gravity_cam is not None:
                g_cam = np.asarray(gravity_cam, np.float64)
            else:
                g = np.asarray(pose)[..., :3] @ up_
                g_cam = g.mean(0) / np.linalg.norm(g.mean(0)) if prior else g
            R0 = align_gravity(R0, up_, g_cam)
        return R0, C0

    for k, fr in enumerate(frames):
        res: dict = {"event": "track"}
        inc = fr.get("cur_from_prev")
        noise = None
        if R is not None and callable(inc):  # odometry whose metric scale comes from the filter's own state
            inc = inc(mean_pose(R, C, np.exp(log_w - log_w.max())))
            if isinstance(inc, tuple):  # with the step's own noise estimate
                inc, noise = inc
        if R is not None and inc is None:
            R = None  # no odometry to predict with: start again from a single-image estimate
            res["gap"] = True
        if R is not None:
            sig = (mc["sigma_t_per_m"], mc["sigma_t_min_m"], mc["sigma_rot_rad"]) if noise is None else \
                (0.0, mc["sigma_t_min_m"] + noise["sigma_t_m"], noise["sigma_rot_rad"])
            R, C = predict(R, C, inc, rng, *sig, up_, g_cam)
        else:
            pose, info = single_image(k)
            res["init_info"] = info
            if pose is None:
                out.append({**res, "event": "uninitialised", "success": False, "cam_from_world": None,
                            "reason": "filter not initialised: " + info.get("reason", "no single-image estimate")})
                continue
            R, C = start(pose)
            log_w, bad, res["event"] = np.zeros(N), 0, "init"
        for attempt in range(2):
            ll, _, _ = _observe(R, C, points, fr["labels"], fr["camera"], conf, rng)
            w = normalise_log_weights(log_w + ll)
            T = mean_pose(R, C, w)
            _, n_vis, n_agree = _observe(T[None, :, :3], camera_center(T)[None], points, fr["labels"],
                                         fr["camera"], conf, rng)
            n_vis, n_agree = int(n_vis[0]), int(n_agree[0])
            ok = n_vis >= rc["min_visible"] and n_agree >= rc["min_agreement"] * n_vis
            bad = 0 if ok else bad + 1
            if bad < rc["patience"] or attempt == 1:
                break
            pose, info = single_image(k)
            res["init_info"] = info
            if pose is None:
                break
            R, C = start(pose)
            log_w, bad, res["event"] = np.zeros(N), 0, "reinit"
        ess = effective_sample_size(w)
        res.update(success=True, cam_from_world=T, ess=ess, n_visible=n_vis, n_agree=n_agree, diverged=bad)
        res["resampled"] = bool(ess < conf["resample_ess"] * N)
        if res["resampled"]:
            idx = systematic_resample(w, rng)
            R, C, log_w = R[idx], C[idx], np.zeros(N)
        else:
            log_w = np.log(np.maximum(w, 1e-300))
        out.append(res)
    return out
