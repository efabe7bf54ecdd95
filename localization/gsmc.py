"""Geometric-semantic match consistency (GSMC, ``--method gsmc``; Toft et al., "Semantic Match Consistency for
Long-Term Visual Localization", ECCV 2018, Sec. 3.2; docs/semantic.md).

Every 2D-3D match gets a semantic consistency score; RANSAC then draws its minimal sets with probabilities
p_i = (s_i + eps) / sum_j (s_j + eps) (weighted sampling, no hard filtering).

Score of one match (unit bearing d in the camera frame, 3D point X), with the gravity direction u_c in the
camera frame and the camera height h known approximately:

- the elevation of the ray is e = asin(d . u_c); for a height h the camera centre lies on a horizontal circle
  around X of radius r = (X . u - h) / tan(e) (valid when r > 0): C(phi) = X - (X . u - h) u - r w(phi), with
  w(phi) = cos(phi) a1 + sin(phi) a2 the horizontal direction from the camera to X (a1, a2, u right-handed);
- the rotation is fixed by the two vector pairs u -> u_c and (X - C) / |X - C| -> d:
  R = [u_c, d_h, u_c x d_h] [u, w, u x w]^T with d_h the unit horizontal part of d in the camera frame;
- phi is sampled in ``num_angles`` steps over the circle (optionally only inside the cone of X's mean viewing
  direction), h in {h0 + offsets};
- each hypothesis projects the labelled map points visible from it (the visibility model shared with PFSL,
  :mod:`reconstruction.visibility`: d_min <= |C - X_j| <= d_max, angle between C - X_j and the point's mean
  viewing direction at most its half-angle view_spread + margin; in front of the camera, inside the image;
  projection with the query camera model including its distortion) and counts those whose label equals the
  query label at the rounded pixel; the match's score is the largest count over its hypotheses.

Gravity and height are never taken from the query's ground truth **(ours)**: u_c is the mean of R_db u over
the database images of the query's camera id (in the query's map when it has some), h0 the matched point's
``cam_height`` in the labelled map (median height of its observing database cameras along ``dataset.up``).

Computing it (:func:`match_scores`). The hypotheses of one match and height are rotations of one camera about
the vertical axis through X, so every quantity of a (hypothesis, point) pair is a fixed combination of
cos(phi) and sin(phi): the distance test holds on two exactly computable arcs of phi, and the cone test and the
projection guard hold only inside arcs bounded analytically. ``gsmc.algorithm: arcs`` (default) decides only
the pairs inside those arcs, for the points a k-d tree finds within reach of the match, with the same per-pair
test as ``brute`` (every pair): the scores are identical (tested), the time is that of the visible pairs. Both
run as torch float64 tensors on ``gsmc.device`` (cuda when ``auto`` finds one; the same scores); on a CPU the arcs
algorithm runs by default as one compiled loop (``gsmc.kernel: numba``, :mod:`localization.gsmc_kernel`: the same
operations, no pair tensors; identical scores, tested).
``gsmc.mode: reduced`` is an approximation of ours, never chosen for you: fewer angles and a seeded subset of
the labelled points; ``benchmarks/bench_gsmc.py`` measures its speed and accuracy cost.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from fgsn.segment import resolve_device
from fgsn.utils.config import DEVICE, Check, between, list_of, one_of
from fgsn.utils.seeding import keyed_rng
from reconstruction.camera import Camera
from reconstruction.records import ImageRecord
from reconstruction.geometry import horizontal_basis
from reconstruction.label_map import LabelledMap
from reconstruction.visibility import cone_cos, within

from .semantic import SemanticLocalizer

logger = logging.getLogger(__name__)

default_conf = {
    "mode": "full",  # full (the paper's definition) | reduced (an approximation of ours: fewer angles and points)
    "num_angles": 360,  # full mode: camera-centre angles phi per height over the circle (the paper: 360)
    "max_points": None,  # full mode: labelled map points projected, seeded subsample; null = all
    "reduced_num_angles": 36,  # reduced mode: angles phi per height
    "reduced_max_points": 2000,  # reduced mode: labelled map points projected (seeded subsample)
    "algorithm": "arcs",  # arcs (analytic visibility arcs, exact) | brute (every pair: the reference, slow)
    "height_offsets_m": [-0.5, 0.0, 0.5],  # camera heights h0 + offset tried per match, metres
    "restrict_to_view_cone": False,  # only angles inside the cone of the matched point's mean viewing direction
    "view_margin_deg": 10.0,  # visibility: angle to the mean viewing direction <= view_spread + this, degrees
    "distance_margin": 0.0,  # visibility: d_min / (1 + m) <= |C - X| <= d_max * (1 + m), relative (paper: 0)
    "min_elevation_deg": 0.1,  # rays closer than this to the horizon give no hypothesis (r undefined), degrees
    "eps": 1.0,  # sampling weight of a match = score + eps (points); > 0 keeps every match drawable
    "seed": 0,  # seed of the point subsample (per map)
    "device": "auto",  # auto (cuda when present), cpu or cuda: the same scores on either
    "kernel": "auto",  # arcs' pair loop: numba (CPU only) | torch; auto = numba on a CPU, torch on a GPU
    "num_threads": 1,  # torch CPU threads while scoring (parallelise over queries with --workers instead)
    "max_batch_elements": 1000000,  # (hypothesis, point) pairs per tensor batch (memory only; larger on a GPU)
}
conf_checks = {  # fgsn.utils.config.check_conf
    "mode": Check(one_of("full", "reduced"), "full or reduced (auto, which chose the reduced approximation on a CPU, "
                  "was removed: GSMC computes the same on every device)"),
    "num_angles": between(1, integer=True),
    "max_points": between(1, integer=True, optional=True),
    "reduced_num_angles": between(1, integer=True),
    "reduced_max_points": between(1, integer=True, optional=True),
    "algorithm": one_of("arcs", "brute"),
    "height_offsets_m": list_of(between()),
    "view_margin_deg": between(0, 180),
    "distance_margin": between(0),
    "min_elevation_deg": between(0, 90, hi_open=True),
    "eps": between(0, lo_open=True),
    "device": DEVICE,
    "kernel": one_of("auto", "numba", "torch"),
    "num_threads": between(1, integer=True),
    "max_batch_elements": between(1, integer=True),
}


# ------------------------------------------------------------------------------------------------------ geometry
def pose_family(bearings: np.ndarray, points3D: np.ndarray, up_cam: np.ndarray, up: np.ndarray,
                heights: np.ndarray, phis: np.ndarray, min_elevation_deg: float = 0.1):
    """Camera poses consistent with one 2D-3D match each, a known gravity direction and camera height.

    Args:
        bearings: (K, 3) unit bearing vectors of the query keypoints, camera frame (undistorted).
        points3D: (K, 3) matched world points, metres.
        up_cam: (3,) the world up axis expressed in the camera frame (gravity prior).
        up: (3,) world up axis.
        heights: (K, H) camera-centre heights along ``up`` (world coordinate C . u), metres.
        phis: (N,) or (K, N) angles of the horizontal direction camera -> point, radians, measured from a1
            towards a2 (:func:`horizontal_basis`).
    Returns:
        R: (K, N, 3, 3) rotations world -> camera (they depend on phi only, not on the height);
        centers: (K, H, N, 3) camera centres, world frame, metres;
        valid: (K, H) bool: the height gives a circle (r > 0 and the ray is not horizontal).
        The pose of hypothesis (k, h, n) is cam_from_world = [R[k, n] | -R[k, n] @ centers[k, h, n]].
    Raises:
        ValueError: inconsistent shapes.
    """
    d = np.asarray(bearings, np.float64)
    X = np.asarray(points3D, np.float64)
    heights = np.asarray(heights, np.float64)
    if d.ndim != 2 or d.shape[1] != 3 or X.shape != d.shape or heights.ndim != 2 or len(heights) != len(d):
        raise ValueError(f"bearings (K, 3), points3D (K, 3), heights (K, H) expected, got {d.shape}, {X.shape}, "
                         f"{heights.shape}")
    K = len(d)
    phis = np.broadcast_to(np.asarray(phis, np.float64), (K, np.shape(phis)[-1]))
    u, a1, a2 = horizontal_basis(up)
    Bc, r, valid = _circles(d, X, up_cam, up, heights, min_elevation_deg)
    vertical = (X @ u)[:, None] - heights  # (K, H) height of X above the camera
    w = np.cos(phis)[..., None] * a1 + np.sin(phis)[..., None] * a2  # (K, N, 3) horizontal camera -> point
    uxw = np.cos(phis)[..., None] * a2 - np.sin(phis)[..., None] * a1  # u x w
    Bw = np.stack([np.broadcast_to(u, w.shape), w, uxw], axis=-1)  # (K, N, 3, 3), columns
    R = Bc[:, None] @ np.swapaxes(Bw, -1, -2)
    centers = (X[:, None, :] - vertical[..., None] * u)[:, :, None, :] - r[..., None, None] * w[:, None]  # (K, H, N, 3)
    return R, centers, valid


_EPS_ANGLE = 1e-6  # radians added to each side of an analytic arc (float64 rounding is ~1e-12)
_EPS_COS = 1e-9  # slack on the cosine bounds of the arcs (acos amplifies it to <= 5e-5 rad near a tangency)


class _Scene:
    """One query's scoring (:func:`match_scores`): the matches' circles and the labelled points, float64 tensors on
    ``device``, in the world basis (u, a1, a2) of :func:`horizontal_basis`.

    For match k, height h and angle phi_n = 2 pi n / N, the pose of :func:`pose_family` puts point j at the
    camera-frame position ``m0 + cos(phi) m1 + sin(phi) m2`` and at squared distance
    ``A + 2 r (bx cos(phi) + by sin(phi))`` from the camera centre, with (bx, by) the horizontal offset X_j - X_k
    along (a1, a2), z = X_j . u - h, r the circle's radius, A = z^2 + r^2 + bx^2 + by^2 and m0, m1, m2 fixed by
    the camera basis Bc of the match. :meth:`features` computes these per (match, height, point) *triple*,
    :meth:`agree` decides one (triple, angle) pair with them, :meth:`arcs` bounds the angles where a triple
    can count."""

    def __init__(self, bearings, points3D, heights, up_cam, up, lmap, point_rows, query_labels, camera,
                 num_angles, min_elevation_deg, view_margin_rad, distance_scale, device):
        u, a1, a2 = horizontal_basis(up)
        basis = np.stack([u, a1, a2], 1)  # world -> (u, a1, a2) coordinates
        Bc, r, valid = _circles(bearings, points3D, up_cam, up, heights, min_elevation_deg)
        t = lambda a, dtype=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
        self.N, self.H, self.device, self.camera = int(num_angles), heights.shape[1], device, camera
        self.distance_scale, self.margin = distance_scale, view_margin_rad
        self.Bc, self.r, self.hgt, self.valid = t(Bc), t(r), t(np.where(valid, heights, 0.0)), valid
        self.Xk = t(np.asarray(points3D, np.float64) @ basis)  # (K, 3) matched points in (u, a1, a2)
        self.P = t(lmap.xyz[point_rows].astype(np.float64) @ basis)  # (M, 3)
        self.V = t(lmap.view_dir[point_rows].astype(np.float64) @ basis)  # (M, 3)
        self.d_min, self.d_max = t(lmap.d_min[point_rows]), t(lmap.d_max[point_rows])
        self.spread = t(lmap.view_spread[point_rows])
        self.label = t(lmap.label[point_rows], torch.int64)
        phis = torch.arange(self.N, dtype=torch.float64, device=device) * (2 * math.pi / self.N)
        self.cphi, self.sphi = torch.cos(phis), torch.sin(phis)
        qlab = torch.as_tensor(np.ascontiguousarray(query_labels), dtype=torch.int64, device=device)
        if tuple(qlab.shape) != (camera.height, camera.width):
            qlab = _resample_labels(qlab, camera.width, camera.height)
        self.qlab = qlab.reshape(-1)
        # a projection is accepted only with x^2 + y^2 < max_radius2 (x, y = X / Z): Z > |X| / sqrt(1 + max_radius2)
        self.cos_fov = 1.0 / math.sqrt(1.0 + camera.max_radius2) if math.isfinite(camera.max_radius2) else 0.0

    def features(self, k, h, j) -> torch.Tensor:
        """(T, 20) angle-independent quantities of the triples (match k, height h, point j), (T,) index tensors:
        A, 2 r bx, 2 r by, lo, hi, cos_thr, a0, r v1, r v2, bx, by, m0 (3), m1 (3), m2 (3), with lo / hi / cos_thr
        the visibility bounds of :func:`reconstruction.visibility.visible`."""
        bx = self.P[j, 1] - self.Xk[k, 1]
        by = self.P[j, 2] - self.Xk[k, 2]
        z = self.P[j, 0] - self.hgt[k, h]
        r = self.r[k, h]
        V, Bc = self.V[j], self.Bc[k]
        # camera frame: Bc @ (z, r + bx c + by s, by c - bx s) = m0 + c m1 + s m2
        m0 = Bc[:, :, 0] * z[:, None] + Bc[:, :, 1] * r[:, None]
        m1 = Bc[:, :, 1] * bx[:, None] + Bc[:, :, 2] * by[:, None]
        m2 = Bc[:, :, 1] * by[:, None] - Bc[:, :, 2] * bx[:, None]
        a0 = -(z * V[:, 0] + bx * V[:, 1] + by * V[:, 2])  # (C - X_j) . v = a0 - r (v1 c + v2 s)
        cols = [z * z + r * r + bx * bx + by * by, 2 * r * bx, 2 * r * by, self.d_min[j] * self.distance_scale[0],
                self.d_max[j] * self.distance_scale[1], cone_cos(self.spread[j], self.margin), a0, r * V[:, 1],
                r * V[:, 2], bx, by]
        return torch.cat([torch.stack(cols, 1), m0, m1, m2], 1)  # (T, 20); :meth:`agree` takes it as (20, T)

    def agree(self, f: torch.Tensor, tri: torch.Tensor, n: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The definition, for the (P,) pairs (triple ``tri`` of the (T, 20) features ``f``, angle index ``n``) and
        the triples' (T,) point labels (``f`` transposed: (20, T)): the point is visible (:func:`reconstruction.visibility.visible`: |C - X|^2
        = A + 2 r (bx c + by s), (C - X) . v = a0 - r (v1 c + v2 s)), in front of the camera, projects inside the
        image (with the camera's distortion) and its label equals the query label at the rounded pixel.
        Returns (P,) bool."""
        c, s = self.cphi[n], self.sphi[n]
        g = f[:9].index_select(1, tri)  # (9, P): features stored (20, T), rows gathered contiguously
        ok = within(g[0] + g[1] * c + g[2] * s, g[6] - (g[7] * c + g[8] * s), g[3], g[4], g[5])
        out = torch.zeros(len(n), dtype=torch.bool, device=self.device)
        idx = torch.nonzero(ok).squeeze(1)
        t, c, s = tri[idx], c[idx], s[idx]
        m = f[11:].index_select(1, t)
        uv, ok = self.camera.project(torch.stack([m[i] + c * m[i + 3] + s * m[i + 6] for i in range(3)], 1))
        ok &= self.camera.in_image(uv)
        W, H = self.camera.width, self.camera.height
        ui = torch.clamp(torch.round(uv[:, 0]), 0, W - 1).long()
        vi = torch.clamp(torch.round(uv[:, 1]), 0, H - 1).long()
        out[idx] = ok & (self.qlab[vi * W + ui] == label[t])
        return out

    def arcs(self, f: torch.Tensor):
        """Integer angle intervals outside of which a triple cannot count: the exact distance arcs intersected with
        necessary conditions of the cone test (at the smallest / largest distance the circle allows) and of the
        projection guard (:attr:`cos_fov`), each arc widened by ``_EPS_ANGLE``. ``f``: (T, 20) features
        (:meth:`features`). Returns (T, 8) starts in [0, N) and (T, 8) lengths in [0, N]; pieces are disjoint."""
        N, step = self.N, 2 * math.pi / self.N
        A, lo, hi, bx, by = f[:, 0], f[:, 3], f[:, 4], f[:, 9], f[:, 10]
        B = torch.sqrt(f[:, 1] ** 2 + f[:, 2] ** 2)  # 2 r beta: |C(phi) - X_j|^2 = A + B cos(phi - theta)
        d_near = torch.maximum(lo, torch.sqrt(torch.clamp(A - B, min=0)))
        d_far = torch.minimum(hi, torch.sqrt(A + B))
        theta = torch.atan2(by, bx)
        tiny = torch.finfo(torch.float64).tiny
        Bs = torch.clamp(B, min=tiny)
        c1, c2 = (lo * lo - A) / Bs - _EPS_COS, (hi * hi - A) / Bs + _EPS_COS
        dist_ok = (c1 <= 1) & (c2 >= -1) & (d_near <= d_far * (1 + 1e-12))
        psa, psb = torch.acos(torch.clamp(c2, -1, 1)), torch.acos(torch.clamp(c1, -1, 1))
        s1, e1 = self._bounds(theta - psb, theta - psa, step)
        s2, e2 = self._bounds(theta + psa, theta + psb, step)
        s2 = torch.maximum(s2, e1 + 1)  # the two arcs touch when psa = 0 or psb = pi: no angle twice
        e2 = torch.minimum(e2, s1 + N - 1)
        L1 = torch.where(dist_ok, torch.clamp(e1 - s1 + 1, 0, N), 0)
        L2 = torch.where(dist_ok, torch.clamp(e2 - s2 + 1, 0, N), 0)
        # cone: (C - X_j) . v = a0 - r nu cos(phi - eta) >= |C - X_j| cos(tau) >= d cos(tau), d = d_near or d_far
        rnu, eta = torch.sqrt(f[:, 7] ** 2 + f[:, 8] ** 2), torch.atan2(f[:, 8], f[:, 7])
        ct = f[:, 5]
        t = (f[:, 6] - torch.where(ct >= 0, d_near, d_far) * ct) / torch.clamp(rnu, min=tiny) + _EPS_COS
        g = torch.acos(torch.clamp(t, -1, 1))
        sc, ec = self._bounds(eta + g, eta + 2 * math.pi - g, step)
        Lc = torch.where(t >= 1, N, torch.where(t < -1, 0, torch.clamp(ec - sc + 1, 0, N)))
        sc = torch.where(t >= 1, 0, sc)
        # projection guard: Z_cam = z0 + z1 c + z2 s >= |X_cam| cos_fov >= d_near cos_fov
        z0, z1, z2 = f[:, 13], f[:, 16], f[:, 19]  # Z_cam components of m0, m1, m2
        tf = (d_near * self.cos_fov - z0) / torch.clamp(torch.sqrt(z1 * z1 + z2 * z2), min=tiny) - _EPS_COS
        mu, gf = torch.atan2(z2, z1), torch.acos(torch.clamp(tf, -1, 1))
        sf, ef = self._bounds(mu - gf, mu + gf, step)
        Lf = torch.where(tf <= -1, N, torch.where(tf > 1, 0, torch.clamp(ef - sf + 1, 0, N)))
        sf = torch.where(tf <= -1, 0, sf)
        pieces = []
        for sd, Ld in ((s1, L1), (s2, L2)):
            for sa, La in _intersect(sd % N, Ld, sc % N, Lc, N):
                pieces += _intersect(sa, La, sf % N, Lf, N)
        return torch.stack([p[0] for p in pieces], 1), torch.stack([p[1] for p in pieces], 1)

    @staticmethod
    def _bounds(a, b, step):
        """First and last grid index n with n * step in [a - eps, b + eps] (unwrapped integers)."""
        return torch.ceil((a - _EPS_ANGLE) / step).long(), torch.floor((b + _EPS_ANGLE) / step).long()


def _intersect(s1, L1, s2, L2, N):
    """Intersection of circular integer intervals [s1, s1 + L1) and [s2, s2 + L2) of Z_N (starts in [0, N)):
    two disjoint pieces ((start, length), (start, length)), possibly empty."""
    b = (s2 - s1) % N
    La = torch.clamp(torch.minimum(b + L2, L1) - b, min=0)
    Lb = torch.clamp(torch.minimum(b + L2 - N, L1), min=0)
    return [((s1 + b) % N, La), (s1, Lb)]


def _ragged(starts: torch.Tensor, lengths: torch.Tensor):
    """Owner and value of every element of the ranges [starts, starts + lengths): two (sum(lengths),) tensors."""
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    offsets = torch.arange(len(owner), device=lengths.device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths)
    return owner, starts[owner] + offsets


def _circles(bearings, points3D, up_cam, up, heights, min_elevation_deg):
    """Per match the camera basis Bc (K, 3, 3) (columns u_c, d_h, u_c x d_h), the circle radii r (K, H) and
    their validity (K, H) (module docstring; shapes as in :func:`pose_family`)."""
    d = np.asarray(bearings, np.float64)
    X = np.asarray(points3D, np.float64)
    u = horizontal_basis(up)[0]
    uc = np.asarray(up_cam, np.float64).reshape(3)
    uc = uc / np.linalg.norm(uc)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    s = np.clip(d @ uc, -1.0, 1.0)  # sin(elevation)
    dh = d - s[:, None] * uc
    dh = dh / np.maximum(np.linalg.norm(dh, axis=1), 1e-12)[:, None]
    cos_e = np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))
    vertical = (X @ u)[:, None] - heights  # (K, H) height of X above the camera
    with np.errstate(divide="ignore", invalid="ignore"):
        r = vertical * (cos_e / s)[:, None]  # (K, H) = vertical / tan(e)
    valid = (np.abs(s) > math.sin(math.radians(min_elevation_deg)))[:, None] & np.isfinite(r) & (r > 0)
    Bc = np.stack([np.broadcast_to(uc, dh.shape), dh, np.cross(uc, dh)], axis=-1)
    return Bc, np.where(valid, r, 0.0), valid


def match_scores(bearings: np.ndarray, points3D: np.ndarray, heights: np.ndarray, up_cam: np.ndarray, up: np.ndarray,
                 lmap: LabelledMap, point_rows: np.ndarray, query_labels: np.ndarray, camera: Camera,
                 num_angles: int = 360, restrict_to_view_cone: bool = False, match_view=None,
                 view_margin_deg: float = 10.0, distance_margin: float = 0.0, min_elevation_deg: float = 0.1,
                 device: str | torch.device = "cpu", max_batch_elements: int = 1_000_000,
                 algorithm: str = "arcs", tree=None, kernel: str = "auto") -> np.ndarray:
    """GSMC semantic consistency score of each match: the best hypothesis' count of agreeing projected points.

    Every (hypothesis, point) pair is decided by one definition (:meth:`_Scene.agree`: visibility, in front,
    inside the image with the distortion, equal labels). ``algorithm="brute"`` tests every pair (the reference);
    ``"arcs"`` (default) gives the same scores testing only the angles inside each point's analytic arcs
    (:meth:`_Scene.arcs`), for the points a k-d tree finds within reach of the match whose label occurs in the
    query label map.

    Args:
        bearings: (K, 3) unit bearings of the query keypoints, camera frame.
        points3D: (K, 3) matched world points, metres.
        heights: (K, H) camera heights along ``up`` to try per match (non-finite: no hypothesis), metres.
        up_cam: (3,) world up in the query camera frame.
        up: (3,) world up axis.
        lmap: the labelled map.
        point_rows: (M',) rows of ``lmap`` to project (labelled points, possibly subsampled).
        query_labels: (H, W) query label map; when its size differs from the camera's, pixels are rescaled.
        camera: query camera (with distortion).
        num_angles: angles phi per full circle.
        restrict_to_view_cone: keep only the angles within view_spread + margin (the half-angle) of the matched
            point's mean viewing direction (then ``match_view`` is needed).
        match_view: ((K, 3) view_dir, (K,) view_spread) of the matched points, for the cone restriction.
        view_margin_deg: visibility cone margin, degrees.
        distance_margin: relative slack m on the distance range: d_min / (1 + m) <= |C - X| <= d_max (1 + m).
        min_elevation_deg: rays closer to the horizon give no hypothesis.
        device: torch device of the scoring (the same scores on any device up to float64 rounding).
        max_batch_elements: (hypothesis, point) pairs tested per tensor batch (memory only).
        algorithm: ``arcs`` or ``brute``.
        tree: a ``scipy.spatial.cKDTree`` over ``lmap.xyz[point_rows]`` (built here when None; ``arcs`` only).
        kernel: the pair loop of ``arcs``: ``numba`` (:func:`localization.gsmc_kernel.count_agreeing`, CPU only, no
            pair tensors), ``torch`` (:meth:`_Scene.agree` on batches of pairs) or ``auto`` (numba on a CPU, torch
            on a GPU); the same scores. ``brute`` always runs :meth:`_Scene.agree`, the reference.
    Returns:
        (K,) int64 scores (0 for a match without a valid hypothesis).
    Raises:
        ValueError: an unknown ``algorithm`` or ``kernel``, numba on a GPU, or a camera model the projection does
            not support.
    """
    if algorithm not in ("arcs", "brute"):
        raise ValueError(f"algorithm must be arcs or brute, got {algorithm!r}")
    device = torch.device(device)
    if kernel not in ("auto", "numba", "torch"):
        raise ValueError(f"kernel must be auto, numba or torch, got {kernel!r}")
    if kernel == "numba" and device.type != "cpu":
        raise ValueError(f"kernel numba runs on the CPU only, not on {device} (use kernel torch or auto)")
    use_numba = algorithm == "arcs" and device.type == "cpu" and kernel != "torch"
    K = len(bearings)
    scores = np.zeros(K, np.int64)
    if K == 0 or len(point_rows) == 0:
        return scores
    camera.intrinsics  # noqa: B018  (raises ValueError for a model the projection does not support)
    heights = np.asarray(heights, np.float64)
    finite = np.isfinite(heights)
    sc = _Scene(bearings, points3D, np.where(finite, heights, 0.0), up_cam, up, lmap, point_rows, query_labels,
                camera, num_angles, min_elevation_deg, math.radians(view_margin_deg),
                (1.0 / (1.0 + distance_margin), 1.0 + distance_margin), device)
    valid = sc.valid & finite
    N, H = sc.N, sc.H
    hyp_t = None  # (K * H * N,) hypotheses kept by the view-cone restriction
    if restrict_to_view_cone:
        vdir, spread = match_view
        u, a1, a2 = horizontal_basis(up)
        phi0 = np.arctan2(-(vdir @ a2), -(vdir @ a1))  # w = horizontal camera -> point = -view_dir's
        phis = np.arange(N) * (2 * math.pi / N)
        dphi = np.abs((phis[None] - phi0[:, None] + math.pi) % (2 * math.pi) - math.pi)  # (K, N)
        keep = dphi <= (np.asarray(spread) + math.radians(view_margin_deg))[:, None]
        hyp_t = torch.as_tensor(np.broadcast_to(keep[:, None, :], (K, H, N)).reshape(-1), device=device)
    if algorithm == "brute":
        near = [np.arange(len(point_rows))] * K
    else:
        from scipy.spatial import cKDTree

        tree = cKDTree(lmap.xyz[point_rows]) if tree is None else tree
        # point j can be visible from circle (k, h) only if |X_j - X_k| <= d_max_j (1 + m) + r + |X_k . u - h|
        reach = np.where(valid, sc.r.cpu().numpy() + np.abs(np.where(finite, heights, 0) - sc.Xk[:, :1].cpu().numpy()), 0)
        radius = reach.max(1) + float(lmap.d_max[point_rows].max()) * (1 + distance_margin) + 1e-6
        near = tree.query_ball_point(np.asarray(points3D, np.float64), radius)
        # a point whose label the query label map does not contain can never agree
        present = np.isin(sc.label.cpu().numpy(), torch.unique(sc.qlab).cpu().numpy())
        if not present.all():
            near = [np.asarray(n, np.int64)[present[np.asarray(n, np.int64)]] for n in near]
    order = [k for k in range(K) if valid[k].any() and len(near[k])]
    if use_numba:
        return _scores_numba(sc, valid, near, order, hyp_t, scores)
    valid_t = torch.as_tensor(valid, device=device)
    out = torch.zeros(K, dtype=torch.int64, device=device)
    budget = max(int(max_batch_elements), N)
    i = 0
    while i < len(order):  # batches of matches: (match, height, candidate point) triples up to budget / 16
        ks, size = [], 0
        while i < len(order) and (not ks or size + H * len(near[order[i]]) <= budget // 16):
            ks.append(order[i])
            size += H * len(near[order[i]])
            i += 1
        k_t = torch.as_tensor(ks, device=device)
        lk = torch.as_tensor(np.concatenate([np.full(len(near[k]), a) for a, k in enumerate(ks)]), device=device)
        jj = torch.as_tensor(np.concatenate([near[k] for k in ks]), dtype=torch.int64, device=device)
        lk, jj = lk.repeat_interleave(H), jj.repeat_interleave(H)
        hh = torch.arange(H, device=device).repeat(len(lk) // H)
        keep = valid_t[k_t[lk], hh]
        lk, jj, hh = lk[keep], jj[keep], hh[keep]
        f = sc.features(k_t[lk], hh, jj)
        if algorithm == "brute":
            starts = torch.zeros((len(lk), 1), dtype=torch.int64, device=device)
            lengths = torch.full((len(lk), 1), N, dtype=torch.int64, device=device)
        else:
            starts, lengths = sc.arcs(f)
        out[k_t] = _count(sc, f, lk, hh, jj, k_t, starts, lengths, hyp_t, len(ks), budget)
    return out.cpu().numpy()


def _scores_numba(sc: _Scene, valid: np.ndarray, near: list, order: list, hyp_t, scores: np.ndarray) -> np.ndarray:
    """The arcs algorithm in :func:`localization.gsmc_kernel.score_matches` (CPU): the same scores as :func:`_count`'s
    batches, without their (triple, angle) tensors."""
    from .gsmc_kernel import score_matches

    fx, fy, cx, cy, dist = sc.camera.intrinsics
    lens = np.array([len(n) for n in near], np.int64)
    ptr = np.concatenate([[0], np.cumsum(lens)])
    idx = np.concatenate([np.asarray(n, np.int64) for n in near]) if lens.sum() else np.zeros(0, np.int64)
    n = lambda t: np.ascontiguousarray(t.numpy())  # noqa: E731
    # the query label map as the smallest integer type that holds it (it is read at random: cache-sized)
    qlab, labels = n(sc.qlab), n(sc.label)
    small = np.int16 if max(abs(int(qlab.min(initial=0))), int(qlab.max(initial=0))) < 2**15 else np.int64
    qlab = qlab.astype(small)
    score_matches(np.asarray(order, np.int64), ptr, idx, np.ascontiguousarray(valid), n(sc.Bc), n(sc.r), n(sc.hgt),
                  n(sc.Xk), n(sc.P), n(sc.V), n(sc.d_min * sc.distance_scale[0]), n(sc.d_max * sc.distance_scale[1]),
                  n(cone_cos(sc.spread, sc.margin)), labels, n(sc.cphi), n(sc.sphi), qlab,
                  sc.camera.width, sc.camera.height, np.array([fx, fy, cx, cy, *dist], np.float64),
                  float(sc.camera.max_radius2), float(sc.cos_fov),
                  np.zeros(0, bool) if hyp_t is None else n(hyp_t), scores)
    return scores


def _count(sc: _Scene, f, lk, hh, jj, k_t, starts, lengths, hyp_t, B: int, budget: int) -> torch.Tensor:
    """Best count per match of a batch: expand each triple's angle pieces into (triple, angle) pairs (groups of
    about ``budget``), decide them with :meth:`_Scene.agree`, count per hypothesis, take the maximum."""
    N, H, device = sc.N, sc.H, sc.device
    P = starts.shape[1]
    starts, lengths = starts.reshape(-1), lengths.reshape(-1)
    nz = torch.nonzero(lengths).squeeze(1)
    labels = sc.label[jj]
    fT = f.T.contiguous()
    starts, lengths = starts[nz], lengths[nz]
    ends = torch.cumsum(lengths, 0)
    counts = torch.zeros(B * H * N, dtype=torch.int64, device=device)
    g0 = 0
    while g0 < len(nz):
        g1 = max(int(torch.searchsorted(ends, ends[g0] - lengths[g0] + budget, right=True)), g0 + 1)
        owner, n = _ragged(starts[g0:g1], lengths[g0:g1])
        tri = nz[g0:g1][owner] // P
        n = n % N
        if hyp_t is not None:  # restrict_to_view_cone
            ok = hyp_t[(k_t[lk[tri]] * H + hh[tri]) * N + n]
            tri, n = tri[ok], n[ok]
        agree = sc.agree(fT, tri, n, labels)
        counts.index_add_(0, (lk[tri] * H + hh[tri]) * N + n, agree.long())
        g0 = g1
    return counts.reshape(B, H * N).max(1).values


def _resample_labels(qlab: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Nearest-neighbour resampling of a (h, w) label map to (height, width) (pixel centres aligned)."""
    h, w = qlab.shape
    ys = torch.clamp(torch.round((torch.arange(height, device=qlab.device) + 0.5) * h / height - 0.5), 0, h - 1).long()
    xs = torch.clamp(torch.round((torch.arange(width, device=qlab.device) + 0.5) * w / width - 0.5), 0, w - 1).long()
    return qlab[ys][:, xs]


def sampling_weights(scores: np.ndarray, eps: float) -> np.ndarray:
    """p_i = (s_i + eps) / sum_j (s_j + eps): RANSAC's sampling probabilities from the match scores."""
    w = np.asarray(scores, np.float64) + float(eps)
    return w / w.sum() if len(w) else w


# ----------------------------------------------------------------------------------------------------- localizer
class GSMCLocalizer(SemanticLocalizer):
    """P3P-RANSAC with minimal sets drawn by GSMC semantic consistency scores (all matches kept)."""

    default_conf = {**SemanticLocalizer.default_conf, "gsmc": default_conf}
    conf_checks = {**SemanticLocalizer.conf_checks, "gsmc": conf_checks}
    weighted_sampling = True

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        if conf.gsmc.mode not in ("full", "reduced"):
            raise ValueError(f"gsmc.mode must be full or reduced, got {conf.gsmc.mode!r} (mode auto, which chose the "
                             "reduced approximation on a CPU, was removed: GSMC computes the same on every device)")
        if conf.gsmc.algorithm not in ("arcs", "brute"):
            raise ValueError(f"gsmc.algorithm must be arcs or brute, got {conf.gsmc.algorithm!r}")
        self._point_rows: dict[str, np.ndarray] = {}
        self._trees: dict[str, object] = {}

    def __getstate__(self):
        return {**super().__getstate__(), "_point_rows": {}, "_trees": {}}

    def settings(self) -> dict:
        """The mode, device, angles and point budget of the configuration (the device never changes the mode)."""
        c = self.conf.gsmc
        device = resolve_device(str(c.device))
        mode = str(c.mode)
        full = mode == "full"
        return {"mode": mode, "device": device, "num_angles": int(c.num_angles if full else c.reduced_num_angles),
                "max_points": c.max_points if full else c.reduced_max_points}

    def point_rows(self, map_id: str, max_points) -> np.ndarray:
        """Rows of the labelled, observed map points that GSMC projects (a seeded subsample if ``max_points``)."""
        if map_id not in self._point_rows:
            lm = self.labelled_map(map_id)
            rows = np.nonzero((lm.label >= 0) & np.isfinite(lm.d_min) & (lm.d_max > 0))[0]
            if max_points is not None and len(rows) > int(max_points):
                rng = keyed_rng(int(self.conf.gsmc.seed), map_id)
                rows = np.sort(rng.choice(rows, int(max_points), replace=False))
            self._point_rows[map_id] = rows
        return self._point_rows[map_id]

    def tree(self, map_id: str, rows: np.ndarray):
        """k-d tree (scipy ``cKDTree``) over the labelled points ``rows`` of ``map_id``, built once per process."""
        if map_id not in self._trees:
            from scipy.spatial import cKDTree

            self._trees[map_id] = cKDTree(self.labelled_map(map_id).xyz[rows])
        return self._trees[map_id]

    def select_matches(self, query: ImageRecord, matches: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict]:
        c = self.conf.gsmc
        st = self.settings()
        t0 = time.perf_counter()
        lm = self.labelled_map(query.map_id)
        pi = matches["point_idx"]
        heights = lm.cam_height[pi].astype(np.float64)[:, None] + np.asarray(list(c.height_offsets_m), np.float64)
        threads = torch.get_num_threads()
        if st["device"].type == "cpu":  # small elementwise kernels: extra threads only contend on a busy machine
            torch.set_num_threads(int(c.num_threads))
        try:
            scores = self._scores(query, matches, lm, heights, st)
        finally:
            torch.set_num_threads(threads)
        weights = sampling_weights(scores, float(c.eps))
        info = {"gsmc_mode": st["mode"], "gsmc_time_s": time.perf_counter() - t0,
                "score_max": int(scores.max(initial=0)), "score_median": float(np.median(scores)) if len(scores) else 0.0,
                "num_scored_matches": int((scores > 0).sum())}
        return np.ones(len(pi), bool), weights if len(pi) else None, info

    @torch.no_grad()
    def _scores(self, query: ImageRecord, matches: dict, lm: LabelledMap, heights: np.ndarray, st: dict) -> np.ndarray:
        c = self.conf.gsmc
        pi = matches["point_idx"]
        rows = self.point_rows(query.map_id, st["max_points"])
        return match_scores(
            matches["bearings"], matches["points3D"], heights, self.gravity(query), self.dataset.up, lm,
            rows, self.label_reader().labels(query.key), query.camera,
            num_angles=st["num_angles"], restrict_to_view_cone=bool(c.restrict_to_view_cone),
            match_view=(lm.view_dir[pi].astype(np.float64), lm.view_spread[pi].astype(np.float64)),
            view_margin_deg=float(c.view_margin_deg), distance_margin=float(c.distance_margin),
            min_elevation_deg=float(c.min_elevation_deg), device=st["device"],
            max_batch_elements=int(c.max_batch_elements), algorithm=str(c.algorithm),
            tree=self.tree(query.map_id, rows) if c.algorithm == "arcs" else None, kernel=str(c.kernel))
