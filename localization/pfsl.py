"""PFSL: a particle filter over query sequences with a semantic observation model (``--method pfsl``).

After Stenborg et al., "Long-term visual localization using semantically segmented images", ICRA 2018
(Sec. III), as used by Larsson et al. (FGSN), ICCV 2019, Sec. 5. Each query sequence (one traversal of one
camera: :attr:`ImageRecord.sequence`, ordered by ``timestamp_s``) is tracked by a set of pose particles:

1. **Initialise** from a single-image estimate: P3P-RANSAC on the frame's 2D-3D matches (the inherited
   :class:`~localization.structure.StructureLocalizer` machinery, optionally after SSMC filtering), with the
   particles spread around it (``init.sigma_t_m``, ``init.sigma_rot_rad``). Frames before the first successful
   estimate are failed results ("not initialised").
2. **Predict** with the odometry increment ``cur_from_prev`` composed on every particle plus Gaussian noise:
   translation sigma = ``sigma_t_per_m`` x distance travelled + ``sigma_t_min_m``, rotation sigma
   ``sigma_rot_rad``.
3. **Update**: the labelled map points (stationary labels only) visible from a particle (``d_min``/``d_max``
   scaled by ``visibility.distance_scale``, within the observation cone ``view_spread`` + margin, in front of
   the camera, inside the image) are projected into the query's label image; with ``s_i`` the query label at
   the projection and ``c_i`` the point's label::

       log w += tau * sum_i log[(alpha 1(s_i = c_i) + (1 - alpha) q(s_i)) / q(s_i)]      (likelihood.model=label)
       log w += lambda * n_agree / n_visible                                            (likelihood.model=agreement)

   with ``q`` the label frequencies of the query image (background model), ``alpha`` the label reproduction
   rate and ``tau`` < 1 a tempering factor **(ours)**.
4. **Resample** (systematic) when the effective sample size drops below ``resample_ess`` x N.
5. **Output** per frame: the weighted mean camera centre and the weighted quaternion average of the rotations.

State (``state``): ``3dof`` **(ours, default)** perturbs only the horizontal position and the yaw about the
dataset's up axis, so height and gravity direction come from the single-image initialisation (estimated from
the database map) and are carried by the odometry; ``6dof`` perturbs all six degrees of freedom. With
``gravity: database`` the 3-DoF tilt is instead GSMC's database estimate (the mean up direction in the camera frame
over the database images of the same camera).

Re-initialisation rule **(ours)**: after the update, the map points visible from the mean pose are checked; the
filter is declared diverged when, for ``reinit.patience`` consecutive frames, fewer than
``reinit.min_visible`` points are visible or their label agreement ``n_agree / n_visible`` is below
``reinit.min_agreement``. It is then re-initialised from that frame's single-image estimate when one succeeds
(otherwise it keeps tracking and tries again at the next frame). A frame without an odometry increment (a gap in
the odometry file) also forces re-initialisation.

Odometry (``odometry.source``): ``file`` reads ``ROOT/<map_id>/odometry/<condition>.txt`` (the demo dataset's
layout: lines ``name_prev name_cur qw qx qy qz tx ty tz`` = cur_from_prev); the demo's files are exact, so by
default they are perturbed with the odometry noise model (``odometry.perturb_file``). ``gt`` synthesises the
increments from ground-truth relative poses plus that noise: every result then says
``info["odometry"] = "synthesised-from-gt"`` and the log warns. ``auto`` uses the file when it exists, else
ground truth. A sequence with neither fails all its frames with the reason.

Stationary labels (``stationary.labels``): ``all``; a list of label ids; or ``auto``: per label,
n_corr / (n_corr + n_noncorr) over a correspondence dataset (``stationary.correspondence``, read by
:mod:`fgsn.data.correspondence`) segmented with the same label source, kept when above
``stationary.min_ratio``.

Because the batch runner calls :meth:`PFSLLocalizer.localize` per query (possibly in worker processes), the
filter runs over whole sequences in :meth:`PFSLLocalizer.prepare` (main process). Each sequence's per-frame
results are cached as JSON under ``<work dir>/pfsl-<labels>-n<particles>-<settings hash>/<sequence>.json``
(resumable per sequence); ``localize`` returns the cached frame. Each sequence's generator is seeded from
(``seed``, sequence name), so results repeat exactly.

Schema of a sequence file: ``{"sequence": str, "odometry": str, "frames": [{"name", "key", "success",
"cam_from_world" ((3, 4) nested list or null), "num_matches", "num_inliers", "info": {...}}]}``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from fgsn.utils.io import write_text_atomic
from fgsn.utils.seeding import keyed_rng
from reconstruction.camera import Camera
from reconstruction.datasets import DatasetError, ImageRecord
from reconstruction.geometry import (average_quaternions, camera_center, compose, invert_pose, pose_from_qvec_tvec,
                                    qvec_to_rotmat, rotmats_to_qvecs)
from reconstruction.semantics import LabelReader, labels_at

from .base import QueryResult
from .semantic import SemanticLocalizer
from .ssmc import consistent_matches
from .structure import StructureLocalizer

logger = logging.getLogger(__name__)

default_conf = {
    "seed": 0,  # base seed; each sequence's generator is seeded from (seed, sequence name)
    "num_particles": 500,  # particles per sequence
    "state": "3dof",  # 3dof: noise on horizontal position + yaw about dataset.up only; 6dof: all six DoF
    "gravity": "estimate",  # 3dof camera tilt: estimate (each (re)initialisation's single-image pose) or database
    # (the mean over the database images of the query's camera, as GSMC; ours)
    "motion": {  # prediction noise added to each odometry increment
        "sigma_t_per_m": 0.06,  # translation sigma per metre travelled, metres / metre
        "sigma_t_min_m": 0.05,  # translation sigma added to every step, metres
        "sigma_rot_rad": 0.02,  # rotation sigma per step (about up in 3dof), radians
    },
    "likelihood": {
        "model": "label",  # label: tempered label-agreement likelihood with background q; agreement: exp(lambda*ratio)
        "alpha": 0.6,  # label reproduction rate, in (0, 1)
        "tau": 0.05,  # tempering factor on the summed log-likelihood (ours), > 0
        "lam": 20.0,  # lambda of the agreement model, log-weight per unit agreement ratio
        "q_min": 0.001,  # floor of the query label frequencies q, fraction of pixels
    },
    "visibility": {
        "max_points": 1500,  # points projected per frame (random subsample of the candidates)
        "distance_scale": [0.5, 1.5],  # visible when d_min * s0 <= distance <= d_max * s1
        "cone_margin_deg": 15.0,  # added to a point's view_spread for the viewing-cone test, degrees
        "min_depth_m": 0.2,  # in front of the camera: depth above this, metres
    },
    "resample_ess": 0.5,  # systematic resampling when ESS < resample_ess * num_particles
    "init": {
        "min_inliers": 15,  # a single-image estimate needs this many P3P inliers to (re)initialise
        "ssmc": False,  # keep only label-consistent matches (SSMC) for the single-image estimate
        "sigma_t_m": 0.3,  # initial spread of the particle positions, metres
        "sigma_rot_rad": 0.05,  # initial spread of the particle rotations, radians
    },
    "reinit": {
        "patience": 3,  # consecutive frames failing the divergence test before re-initialising
        "min_visible": 10,  # fewer map points visible from the mean pose counts as diverged
        "min_agreement": 0.25,  # label agreement n_agree / n_visible at the mean pose below this is diverged
    },
    "odometry": {
        "source": "auto",  # auto (file, else ground truth) | file | gt
        "perturb_file": True,  # add the noise below to odometry read from a file (the demo's files are exact)
        "noise_t_per_m": 0.05,  # odometry translation noise per metre travelled, metres / metre
        "noise_rot_rad": 0.01,  # odometry rotation noise per step, radians
    },
    "stationary": {
        "labels": "all",  # all | auto | list of label ids used by the observation model
        "correspondence": None,  # auto: correspondence dataset root (folders sliceN/correspondence_data)
        "label_file": None,  # auto: label file of its images (names = sliceN/<image path>); null = segment them
        "min_ratio": 0.5,  # auto: a label is stationary when n_corr / (n_corr + n_noncorr) >= this
    },
}


# ============================================================================================================
# Pure filter functions (NumPy, no I/O)
# ============================================================================================================
def axis_angle_to_rotmat(omega: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle vectors (radians) -> (N, 3, 3) rotation matrices (scipy's Rodrigues)."""
    return Rotation.from_rotvec(np.asarray(omega, dtype=np.float64).reshape(-1, 3)).as_matrix()


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
    """Particles spread around one pose (see :func:`perturb_particles` for ``up``).

    Args:
        cam_from_world: (3, 4) pose, world -> camera, metres.
    Returns:
        R: (N, 3, 3) cam_from_world rotations; C: (N, 3) camera centres, world frame.
    """
    T = np.asarray(cam_from_world, dtype=np.float64)
    if T.shape != (3, 4):
        raise ValueError(f"cam_from_world must be (3, 4), got {T.shape}")
    R = np.repeat(T[None, :, :3], num_particles, axis=0)
    C = np.repeat(camera_center(T)[None], num_particles, axis=0)
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


def perturb_odometry(cur_from_prev: np.ndarray, rng: np.random.Generator, noise_t_per_m: float,
                     noise_rot_rad: float) -> np.ndarray:
    """A noisy copy of an odometry increment: (3, 4) cur_from_prev -> (3, 4).

    The rotation is multiplied by a random rotation of sigma ``noise_rot_rad`` per axis; the displacement (the
    current camera centre in the previous camera frame) gets per-axis noise of sigma ``noise_t_per_m`` x its length.
    """
    T = np.asarray(cur_from_prev, dtype=np.float64)
    Rd, td = T[:, :3], T[:, 3]
    d = -Rd.T @ td
    d_noisy = d + rng.normal(size=3) * noise_t_per_m * np.linalg.norm(d)
    Rn = axis_angle_to_rotmat(rng.normal(size=(1, 3)) * noise_rot_rad)[0] @ Rd
    return np.concatenate([Rn, (-Rn @ d_noisy)[:, None]], axis=1)


def relative_pose(cam_from_world_prev: np.ndarray, cam_from_world_cur: np.ndarray) -> np.ndarray:
    """cur_from_prev = cur_from_world * world_from_prev: (3, 4), (3, 4) -> (3, 4)."""
    return compose(cam_from_world_cur, invert_pose(cam_from_world_prev))


def project_visible(R: np.ndarray, C: np.ndarray, xyz: np.ndarray, d_min: np.ndarray, d_max: np.ndarray,
                    view_dir: np.ndarray, view_spread: np.ndarray, camera: Camera,
                    distance_scale: Sequence[float] = (0.5, 1.5), cone_margin_rad: float = 0.26,
                    min_depth_m: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Project the map points visible from each particle into the image (no occlusion test).

    A point is visible when ``d_min * s0 <= |C - X| <= d_max * s1``, the angle between ``C - X`` and its mean
    viewing direction is below ``view_spread + cone_margin_rad``, its depth exceeds ``min_depth_m`` and it
    projects inside the image (:meth:`reconstruction.camera.Camera.project`, fold-over guard included).

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
    dist = np.linalg.norm(diff, axis=2)
    vis = (dist >= d_min * distance_scale[0]) & (dist <= d_max * distance_scale[1])
    cos = np.einsum("pmk,mk->pm", diff, view_dir) / np.maximum(dist, 1e-9)
    vis &= cos >= np.cos(np.minimum(view_spread + cone_margin_rad, np.pi))
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
    """Per-label n_corr / (n_corr + n_noncorr) over correspondences (the paper's stationarity measure).

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
            None for the first frame or a gap).
        points: the labelled map points (stationary labels only).
        conf: :data:`default_conf` as a plain dict (keys used: num_particles, state, motion, likelihood,
            visibility, resample_ess, init, reinit).
        rng: random generator (the whole run is deterministic given it).
        single_image: frame index -> (cam_from_world (3, 4) or None, info dict): the single-image estimate used
            to (re)initialise.
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
        R0, C0 = init_particles(pose, N, rng, ic["sigma_t_m"], ic["sigma_rot_rad"], up_)
        if up_ is not None:
            g_cam = np.asarray(pose)[:, :3] @ up_ if gravity_cam is None else np.asarray(gravity_cam, np.float64)
            R0 = align_gravity(R0, up_, g_cam)
        return R0, C0

    for k, fr in enumerate(frames):
        res: dict = {"event": "track"}
        if R is not None and fr.get("cur_from_prev") is None:
            R = None  # no odometry to predict with: start again from a single-image estimate
            res["gap"] = True
        if R is not None:
            R, C = predict(R, C, fr["cur_from_prev"], rng, mc["sigma_t_per_m"], mc["sigma_t_min_m"],
                           mc["sigma_rot_rad"], up_, g_cam)
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


# ============================================================================================================
# Odometry sources
# ============================================================================================================
def read_odometry_file(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """``name_prev name_cur qw qx qy qz tx ty tz`` lines -> {(name_prev, name_cur): (3, 4) cur_from_prev}.

    Raises:
        DatasetError: a line without 9 fields or with non-numeric values (names the file and line).
    """
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                if len(parts) != 9:
                    raise ValueError
                v = np.array([float(x) for x in parts[2:]])
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: expected 'name_prev name_cur qw qx qy qz tx ty tz'") from None
            out[(parts[0], parts[1])] = pose_from_qvec_tvec(v[:4], v[4:])
    return out


def sequence_odometry(records: Sequence[ImageRecord], root: Path, conf, rng: np.random.Generator
                      ) -> tuple[list[np.ndarray | None], str]:
    """Odometry increments of a time-ordered sequence and where they come from.

    Args:
        records: the sequence's queries in time order.
        root: dataset root (the file is ``root/<map_id>/odometry/<condition>.txt``).
        conf: the ``odometry`` section of :data:`default_conf`.
        rng: generator of the synthesised / perturbed noise.
    Returns:
        increments: per frame, (3, 4) cur_from_prev from the previous frame, or None (first frame, or a pair the
            file does not list).
        source: ``"file"``, ``"file+noise"`` or ``"synthesised-from-gt"``.
    Raises:
        DatasetError: no usable odometry for this sequence (names what is missing).
    """
    path = Path(root) / records[0].map_id / "odometry" / f"{records[0].condition}.txt"
    if conf.source not in ("auto", "file", "gt"):
        raise ValueError(f"odometry.source must be auto, file or gt, got {conf.source!r}")
    use_file = conf.source == "file" or (conf.source == "auto" and path.is_file())
    if use_file:
        if not path.is_file():
            raise DatasetError(f"{path}: odometry file not found (odometry.source=file)")
        table = read_odometry_file(path)
        inc = [None] + [table.get((Path(a.name).name, Path(b.name).name)) for a, b in zip(records[:-1], records[1:])]
        if conf.perturb_file:
            inc = [None if T is None else perturb_odometry(T, rng, conf.noise_t_per_m, conf.noise_rot_rad)
                   for T in inc]
        return inc, "file+noise" if conf.perturb_file else "file"
    missing = [r.name for r in records if r.cam_from_world is None]
    if missing:
        raise DatasetError(f"no odometry for sequence {records[0].sequence}: {path} does not exist and "
                           f"{len(missing)} frames have no ground truth to synthesise it from (e.g. {missing[0]})")
    inc = [None] + [perturb_odometry(relative_pose(a.cam_from_world, b.cam_from_world), rng, conf.noise_t_per_m,
                                     conf.noise_rot_rad) for a, b in zip(records[:-1], records[1:])]
    return inc, "synthesised-from-gt"


# ============================================================================================================
# The localizer
# ============================================================================================================
def group_sequences(queries: Sequence[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Queries grouped by :attr:`ImageRecord.sequence` (map/condition/camera), each ordered by timestamp."""
    seqs: dict[str, list[ImageRecord]] = {}
    for q in queries:
        seqs.setdefault(q.sequence, []).append(q)
    return {k: sorted(v, key=lambda r: (r.timestamp_s, r.name)) for k, v in sorted(seqs.items())}


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class PFSLLocalizer(SemanticLocalizer):
    """Semantic particle filter over query sequences (Stenborg et al. 2018); see the module docstring."""

    default_conf = {**SemanticLocalizer.default_conf, "pfsl": default_conf}

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        pc = conf.pfsl
        if pc.state not in ("3dof", "6dof"):
            raise ValueError(f"pfsl.state must be '3dof' or '6dof', got {pc.state!r}")
        if pc.gravity not in ("estimate", "database"):
            raise ValueError(f"pfsl.gravity must be 'estimate' or 'database', got {pc.gravity!r}")
        if pc.likelihood.model not in ("label", "agreement"):
            raise ValueError(f"pfsl.likelihood.model must be 'label' or 'agreement', got {pc.likelihood.model!r}")
        settings = OmegaConf.to_yaml(OmegaConf.create({"pfsl": pc, "features": conf.features, "matching": conf.matching,
                                                       "ransac": conf.ransac, "label_map": conf.label_map}))
        digest = hashlib.sha1(f"{settings}{self.labels_path.name}".encode()).hexdigest()[:8]
        self.sequence_dir = self.work_dir / f"pfsl-{self.labels_path.stem.removeprefix('labels-')}-n{pc.num_particles}-{digest}"
        self._seq_cache: dict[str, dict] = {}
        self._stationary: list[int] | None = None

    def sequence_path(self, sequence: str) -> Path:
        return self.sequence_dir / (sequence.replace("/", "_") + ".json")

    # ------------------------------------------------------------------------------------------------- prepare
    def prepare(self, queries: list[ImageRecord] | None = None) -> None:
        super().prepare(queries)
        self.sequence_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.conf, self.sequence_dir / "config.yaml")
        seqs = group_sequences(self.dataset.queries)
        todo = {k: v for k, v in seqs.items() if not self.sequence_path(k).is_file()}
        if not todo:
            return
        self._stationary = self.stationary_labels()
        logger.info("PFSL: %d sequences to filter (%d cached), %d particles, %s state, stationary labels: %s.",
                    len(todo), len(seqs) - len(todo), self.conf.pfsl.num_particles, self.conf.pfsl.state,
                    "all" if self._stationary is None else self._stationary)
        for name, records in tqdm(todo.items(), desc="PFSL sequences", unit="sequence", disable=None):
            result = self.filter_sequence(name, records)
            write_text_atomic(self.sequence_path(name), json.dumps(_jsonable(result)))

    def stationary_labels(self) -> list[int] | None:
        """The label ids used by the observation model (None = all), from ``pfsl.stationary``."""
        sc = self.conf.pfsl.stationary
        if isinstance(sc.labels, str):
            if sc.labels == "all":
                return None
            if sc.labels == "auto":
                return self._auto_stationary()
            raise ValueError(f"pfsl.stationary.labels must be all, auto or a list of ids, got {sc.labels!r}")
        return [int(v) for v in sc.labels]

    def _auto_stationary(self) -> list[int]:
        from fgsn.data.correspondence import load_samples

        sc = self.conf.pfsl.stationary
        if not sc.correspondence:
            raise ValueError("pfsl.stationary.labels=auto needs pfsl.stationary.correspondence=PATH")
        samples = load_samples(sc.correspondence)
        if sc.label_file:
            path = Path(sc.label_file)
        else:
            if self.conf.semantics.source != "checkpoint":
                raise ValueError("pfsl.stationary.labels=auto with semantics.source=labels needs "
                                 "pfsl.stationary.label_file (labels of the correspondence images)")
            from fgsn.models import PSPNet
            from fgsn.segment import segment_images

            path = self.work_dir / f"{self.labels_path.stem}-correspondence.h5"
            items = {s.ref_name: s.ref_path for s in samples} | {s.tgt_name: s.tgt_path for s in samples}
            segment_images(PSPNet.from_checkpoint(self.conf.semantics.checkpoint), list(items.values()), path,
                           names=list(items), conf=dict(self.conf.semantics.segment))
        reader = LabelReader(path)
        K = self.label_reader().num_classes
        pairs = [(labels_at(reader.labels(s.ref_name), s.pt_ref), labels_at(reader.labels(s.tgt_name), s.pt_tgt))
                 for s in samples]
        ratio = label_consistency(pairs, K)
        keep = [int(k) for k in np.flatnonzero(np.nan_to_num(ratio, nan=-1.0) >= sc.min_ratio)]
        logger.info("PFSL stationary labels (n_corr / (n_corr + n_noncorr) >= %.2f over %d pairs): %d of %d: %s",
                    sc.min_ratio, len(samples), len(keep), K, keep)
        if not keep:
            raise ValueError(f"no stationary label at min_ratio {sc.min_ratio}; lower pfsl.stationary.min_ratio")
        return keep

    def select_matches(self, query, matches):
        keep, weights, info = super().select_matches(query, matches)
        if self.conf.pfsl.init.ssmc:
            q_lab = self.label_reader().at(query.key, matches["keypoints"])
            keep &= consistent_matches(q_lab, self.labelled_map(query.map_id).label[matches["point_idx"]])
        return keep, weights, info

    def _single_image(self, query: ImageRecord, rng: np.random.Generator) -> tuple[np.ndarray | None, dict]:
        res = StructureLocalizer.localize(self, query, rng)
        info = {"frame": query.name, "num_matches": res.num_matches, "num_inliers": res.num_inliers}
        if not res.success or res.num_inliers < self.conf.pfsl.init.min_inliers:
            info["reason"] = res.info.get("reason", f"{res.num_inliers} inliers < init.min_inliers")
            return None, info
        return res.cam_from_world, info

    def filter_sequence(self, name: str, records: list[ImageRecord]) -> dict:
        """Run the filter over one time-ordered sequence; returns the sequence file's content (module docstring)."""
        pc = self.conf.pfsl
        rng = keyed_rng(pc.seed, name)

        def failed(reason):
            return {"sequence": name, "odometry": None, "frames": [
                {"name": r.name, "key": r.key, "success": False, "cam_from_world": None, "num_matches": 0,
                 "num_inliers": 0, "info": {"reason": reason}} for r in records]}

        try:
            increments, source = sequence_odometry(records, self.dataset.root, pc.odometry, rng)
        except DatasetError as e:
            logger.error("PFSL: %s", e)
            return failed(str(e))
        if source == "synthesised-from-gt":
            logger.warning("PFSL: sequence %s has no odometry file: odometry SYNTHESISED from ground-truth relative "
                           "poses + noise (%.3f m/m, %.3f rad); its results say info.odometry=%s.", name,
                           pc.odometry.noise_t_per_m, pc.odometry.noise_rot_rad, source)
        usable = [i for i, r in enumerate(records) if r.key not in self.bad_images]
        if not usable:
            return failed("no readable image in the sequence")
        points = MapPoints.from_labelled_map(self.labelled_map(records[0].map_id), self._stationary)
        reader = self.label_reader()
        frames = []
        for j, i in enumerate(usable):  # unreadable frames are skipped: the odometry chains across them
            inc = increments[i]
            if j > 0 and i != usable[j - 1] + 1:
                inc = None if any(increments[m] is None for m in range(usable[j - 1] + 1, i + 1)) else \
                    _chain(increments[usable[j - 1] + 1: i + 1])
            frames.append({"labels": reader.labels(records[i].key), "camera": records[i].camera,
                           "cur_from_prev": inc if j > 0 else None})
        match_stats: dict[int, dict] = {}

        def single_image(j):
            pose, info = self._single_image(records[usable[j]], rng)
            match_stats[j] = info
            return pose, info

        conf = OmegaConf.to_container(pc, resolve=True)
        gravity_cam = self.gravity(records[0]) if pc.gravity == "database" and pc.state == "3dof" else None
        states = run_filter(frames, points, conf, rng, single_image, up=self.dataset.up, gravity_cam=gravity_cam)
        out = failed("unreadable image")
        out["odometry"] = source
        for r, fr in zip(records, out["frames"]):
            if r.key in self.bad_images:
                fr["info"]["reason"] = self.bad_images[r.key]
        for j, st in zip(range(len(usable)), states):
            fr = out["frames"][usable[j]]
            info = {"odometry": source, "event": st["event"], "pfsl_frame": j}
            for k in ("ess", "n_visible", "n_agree", "resampled", "diverged", "init_info", "reason", "gap"):
                if k in st:
                    info[k] = st[k]
            ms = match_stats.get(j, {})
            fr.update(success=bool(st["success"]), cam_from_world=st["cam_from_world"], info=info,
                      num_matches=int(ms.get("num_matches", 0)), num_inliers=int(ms.get("num_inliers", 0)))
        return out

    # ------------------------------------------------------------------------------------------------ localize
    def localize(self, query: ImageRecord, rng: np.random.Generator) -> QueryResult:
        if query.sequence not in self._seq_cache:
            path = self.sequence_path(query.sequence)
            if not path.is_file():
                return QueryResult(query.name, False, info={"reason": f"no PFSL result: {path} missing (run prepare)"})
            self._seq_cache[query.sequence] = {f["name"]: f for f in json.loads(path.read_text())["frames"]}
        fr = self._seq_cache[query.sequence].get(query.name)
        if fr is None:
            return QueryResult(query.name, False, info={"reason": f"not in PFSL sequence {query.sequence}"})
        T = None if fr["cam_from_world"] is None else np.asarray(fr["cam_from_world"], np.float64)
        return QueryResult(query.name, fr["success"], T, fr["num_matches"], fr["num_inliers"], info=fr["info"])

    def __getstate__(self):
        return {**super().__getstate__(), "_seq_cache": {}}


def _chain(increments: Sequence[np.ndarray]) -> np.ndarray:
    """Compose consecutive (3, 4) cur_from_prev increments into one (last_from_first)."""
    return functools.reduce(lambda first, cur: compose(cur, first), increments)
