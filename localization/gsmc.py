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
- each hypothesis projects the labelled map points visible from it (d_min < |C - X_j| < d_max, angle between
  C - X_j and the point's mean viewing direction below view_spread / 2 + margin, in front of the camera, inside
  the image; projection with the query camera model including its distortion) and counts those whose label
  equals the query label at the rounded pixel; the match's score is the largest count over its hypotheses.

Gravity and height are never taken from the query's ground truth **(ours)**: u_c is the mean of R_db u over
the database images of the query's camera id (in the query's map when it has some), h0 the matched point's
``cam_height`` in the labelled map (median height of its observing database cameras along ``dataset.up``).

Cost: matches x hypotheses x points projections per query. They run as torch tensors in batches of
(poses x points) on ``gsmc.device`` (cuda when ``auto`` finds one). The reduced mode (``gsmc.mode``: ``reduced``,
or ``auto`` on CPU) samples fewer angles and a seeded subset of the labelled points; ``benchmarks/bench_gsmc.py``
measures its speed and accuracy cost.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from fgsn.segment import resolve_device
from fgsn.utils.seeding import keyed_rng
from reconstruction.camera import Camera
from reconstruction.records import ImageRecord
from reconstruction.geometry import horizontal_basis
from reconstruction.label_map import LabelledMap

from .semantic import SemanticLocalizer

logger = logging.getLogger(__name__)

default_conf = {
    "mode": "auto",  # full | reduced | auto (full on cuda, reduced on cpu)
    "num_angles": 360,  # full mode: camera-centre angles phi per height over the circle (the paper: 360)
    "max_points": None,  # full mode: labelled map points projected, seeded subsample; null = all
    "reduced_num_angles": 36,  # reduced mode: angles phi per height
    "reduced_max_points": 2000,  # reduced mode: labelled map points projected (seeded subsample)
    "height_offsets_m": [-0.5, 0.0, 0.5],  # camera heights h0 + offset tried per match, metres
    "restrict_to_view_cone": False,  # only angles inside the cone of the matched point's mean viewing direction
    "view_margin_deg": 10.0,  # visibility: angle to the mean viewing direction < view_spread / 2 + this, degrees
    "distance_margin": 0.0,  # visibility: d_min / (1 + m) < |C - X| < d_max * (1 + m), relative (paper: 0)
    "min_elevation_deg": 0.1,  # rays closer than this to the horizon give no hypothesis (r undefined), degrees
    "eps": 1.0,  # sampling weight of a match = score + eps (points); > 0 keeps every match drawable
    "seed": 0,  # seed of the point subsample (per map)
    "device": "auto",  # auto (cuda when present), cpu or cuda
    "num_threads": 1,  # torch CPU threads while scoring (parallelise over queries with --workers instead)
    "max_batch_elements": 1000000,  # poses x points per tensor batch (memory / speed only; larger on a GPU)
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
    uc = np.asarray(up_cam, np.float64).reshape(3)
    uc = uc / np.linalg.norm(uc)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    s = np.clip(d @ uc, -1.0, 1.0)  # sin(elevation)
    dh = d - s[:, None] * uc
    dh_norm = np.linalg.norm(dh, axis=1)
    dh = dh / np.maximum(dh_norm, 1e-12)[:, None]
    cos_e = np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))
    vertical = (X @ u)[:, None] - heights  # (K, H) height of X above the camera
    with np.errstate(divide="ignore", invalid="ignore"):
        r = vertical * (cos_e / s)[:, None]  # (K, H) = vertical / tan(e)
    valid = (np.abs(s) > math.sin(math.radians(min_elevation_deg)))[:, None] & np.isfinite(r) & (r > 0)
    r = np.where(valid, r, 0.0)
    w = np.cos(phis)[..., None] * a1 + np.sin(phis)[..., None] * a2  # (K, N, 3) horizontal camera -> point
    uxw = np.cos(phis)[..., None] * a2 - np.sin(phis)[..., None] * a1  # u x w
    Bw = np.stack([np.broadcast_to(u, w.shape), w, uxw], axis=-1)  # (K, N, 3, 3), columns
    Bc = np.stack([np.broadcast_to(uc, dh.shape), dh, np.cross(uc, dh)], axis=-1)  # (K, 3, 3), columns
    R = Bc[:, None] @ np.swapaxes(Bw, -1, -2)
    centers = (X[:, None, :] - vertical[..., None] * u)[:, :, None, :] - r[..., None, None] * w[:, None]  # (K, H, N, 3)
    return R, centers, valid


def score_poses(R: torch.Tensor, centers: torch.Tensor, points: dict[str, torch.Tensor], query_labels: torch.Tensor,
                camera: Camera, view_margin_rad: float, distance_margin: float = 0.0) -> torch.Tensor:
    """Semantic score of camera poses: labelled points visible from the pose whose label equals the query label.

    Coordinates may be expressed relative to any common origin (to keep float32 precise).

    Args:
        R: (Q, 3, 3) rotations world -> camera.
        centers: (Q, 3) camera centres, world frame, metres.
        points: labelled map points: ``xyz`` (M, 3) world, ``label`` (M,) int64 (>= 0), ``d_min``/``d_max`` (M,)
            metres, ``view_dir`` (M, 3) unit point -> cameras, ``view_spread`` (M,) radians.
        query_labels: (H, W) int64 query label map at the camera's resolution.
        camera: the query camera (projection with its distortion and fold-over guard, :mod:`reconstruction.camera`).
        view_margin_rad: margin added to view_spread / 2 in the visibility cone, radians.
        distance_margin: relative slack on d_min / d_max.
    Returns:
        (Q,) int64 number of agreeing points per pose.
    """
    X, v = points["xyz"], points["view_dir"]
    # Pairwise terms as matrix products (fast on CPU and GPU): |C - X|^2, (C - X) . v and R (X - C).
    dist2 = (centers * centers).sum(1)[:, None] - 2 * centers @ X.T + (X * X).sum(1)[None]  # (Q, M)
    along = centers @ v.T - (X * v).sum(1)[None]  # (C - X) . view_dir
    cos_thr = torch.cos(torch.clamp(points["view_spread"] / 2 + view_margin_rad, max=math.pi))
    lo = (points["d_min"] / (1 + distance_margin)) ** 2
    hi = (points["d_max"] * (1 + distance_margin)) ** 2
    visible = (dist2 > lo) & (dist2 < hi) & (along > torch.sqrt(torch.clamp(dist2, min=0)) * cos_thr)
    q, m = torch.nonzero(visible, as_tuple=True)  # project only the visible (pose, point) pairs
    Xc = torch.einsum("nij,nj->ni", R[q], X[m] - centers[q])
    uv, ok = camera.project(Xc)
    ok &= camera.in_image(uv)
    u, v = uv[:, 0], uv[:, 1]
    H, W = query_labels.shape
    ui = torch.clamp(torch.round(u), 0, W - 1).long()
    vi = torch.clamp(torch.round(v), 0, H - 1).long()
    agree = ok & (query_labels.reshape(-1)[vi * W + ui] == points["label"][m])
    return torch.zeros(len(R), dtype=torch.int64, device=R.device).index_add_(0, q, agree.long())


def match_scores(bearings: np.ndarray, points3D: np.ndarray, heights: np.ndarray, up_cam: np.ndarray, up: np.ndarray,
                 lmap: LabelledMap, point_rows: np.ndarray, query_labels: np.ndarray, camera: Camera,
                 num_angles: int = 360, restrict_to_view_cone: bool = False, match_view=None,
                 view_margin_deg: float = 10.0, distance_margin: float = 0.0, min_elevation_deg: float = 0.1,
                 device: str | torch.device = "cpu", max_batch_elements: int = 1_000_000) -> np.ndarray:
    """GSMC semantic consistency score of each match: the best hypothesis' count of agreeing projected points.

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
        restrict_to_view_cone: keep only the angles within view_spread / 2 + margin of the matched point's mean
            viewing direction (then ``match_view`` is needed).
        match_view: ((K, 3) view_dir, (K,) view_spread) of the matched points, for the cone restriction.
        view_margin_deg: visibility cone margin, degrees.
        distance_margin: relative slack on d_min / d_max.
        min_elevation_deg: rays closer to the horizon give no hypothesis.
        device: torch device of the scoring.
        max_batch_elements: poses x points per tensor batch.
    Returns:
        (K,) int64 scores (0 for a match without a valid hypothesis).
    """
    K = len(bearings)
    scores = np.zeros(K, np.int64)
    if K == 0 or len(point_rows) == 0:
        return scores
    device = torch.device(device)
    phis = np.arange(num_angles) * (2 * math.pi / num_angles)
    heights = np.where(np.isfinite(heights), heights, np.nan)
    R, centers, valid = pose_family(bearings, points3D, up_cam, up, np.nan_to_num(heights, nan=0.0), phis,
                                    min_elevation_deg)
    valid &= np.isfinite(heights)
    margin = math.radians(view_margin_deg)
    hyp = np.broadcast_to(valid[:, :, None], centers.shape[:3]).copy()  # (K, H, N)
    if restrict_to_view_cone:
        vdir, spread = match_view
        u, a1, a2 = horizontal_basis(up)
        phi0 = np.arctan2(-(vdir @ a2), -(vdir @ a1))  # w = horizontal camera -> point = -view_dir's
        dphi = np.abs((phis[None] - phi0[:, None] + math.pi) % (2 * math.pi) - math.pi)  # (K, N)
        hyp &= (dphi <= (np.asarray(spread) / 2 + margin)[:, None])[:, None, :]
    # Hypotheses are scored in batches of matches; coordinates relative to the batch's first point (float32).
    lab_H, lab_W = query_labels.shape
    camera.intrinsics  # noqa: B018  (raises ValueError for a model the projection does not support)
    qlab = torch.as_tensor(np.ascontiguousarray(query_labels), dtype=torch.int64, device=device)
    if (lab_W, lab_H) != (camera.width, camera.height):
        qlab = _resample_labels(qlab, camera.width, camera.height)
    pts_all = {"xyz": lmap.xyz[point_rows].astype(np.float64), "label": lmap.label[point_rows],
               "d_min": lmap.d_min[point_rows], "d_max": lmap.d_max[point_rows],
               "view_dir": lmap.view_dir[point_rows], "view_spread": lmap.view_spread[point_rows]}
    # A point can be visible from a hypothesis of match k only if |X_k - X_j| < d_max_j (1 + m) + |C - X_k|.
    reach = np.where(valid, np.abs(np.nan_to_num(heights - (points3D @ horizontal_basis(up)[0])[:, None])), 0)
    reach = reach / np.maximum(np.abs(np.clip(bearings @ (up_cam / np.linalg.norm(up_cam)), -1, 1)), 1e-9)[:, None]
    reach = reach.max(1)  # (K,) largest camera-point distance of a hypothesis
    order = np.argsort(points3D @ np.linalg.svd(points3D - points3D.mean(0), full_matrices=False)[2][0])
    per_pose = hyp.sum((1, 2))
    start = 0
    while start < K:
        # grow the batch while poses x candidate points stays under the budget
        end = start + 1
        while end < K and per_pose[order[start:end + 1]].sum() * len(point_rows) <= max_batch_elements:
            end += 1
        ks = order[start:end]
        start = end
        if per_pose[ks].sum() == 0:
            continue
        origin = points3D[ks[0]]
        dist = np.linalg.norm(pts_all["xyz"][None] - points3D[ks][:, None], axis=-1)  # (B, M')
        cand = np.any(dist < pts_all["d_max"] * (1 + distance_margin) + reach[ks][:, None], axis=0)
        if not cand.any():
            continue
        pts = {k: torch.as_tensor(np.ascontiguousarray(v[cand]), device=device) for k, v in pts_all.items()}
        pts["xyz"] = torch.as_tensor((pts_all["xyz"][cand] - origin).astype(np.float32), device=device)
        for k in ("d_min", "d_max", "view_spread", "view_dir"):
            pts[k] = pts[k].float()
        kk, hh, nn = np.nonzero(hyp[ks])
        # split this batch's poses so that each chunk stays under the budget
        chunk = max(1, max_batch_elements // max(int(cand.sum()), 1))
        best = np.zeros(len(ks), np.int64)
        for c0 in range(0, len(kk), chunk):
            sl = slice(c0, c0 + chunk)
            Rb = torch.as_tensor(R[ks[kk[sl]], nn[sl]].astype(np.float32), device=device)
            Cb = torch.as_tensor((centers[ks[kk[sl]], hh[sl], nn[sl]] - origin).astype(np.float32), device=device)
            s = score_poses(Rb, Cb, pts, qlab, camera, margin, distance_margin).cpu().numpy()
            np.maximum.at(best, kk[sl], s)
        scores[ks] = best
    return scores


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
    weighted_sampling = True

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        if conf.gsmc.mode not in ("full", "reduced", "auto"):
            raise ValueError(f"gsmc.mode must be full, reduced or auto, got {conf.gsmc.mode!r}")
        self._point_rows: dict[str, np.ndarray] = {}

    def __getstate__(self):
        return {**super().__getstate__(), "_point_rows": {}}

    def settings(self) -> dict:
        """The effective mode, device, angles and point budget (``mode: auto`` resolved)."""
        c = self.conf.gsmc
        device = resolve_device(str(c.device))
        mode = c.mode if c.mode != "auto" else ("full" if device.type == "cuda" else "reduced")
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
        return match_scores(
            matches["bearings"], matches["points3D"], heights, self.gravity(query), self.dataset.up, lm,
            self.point_rows(query.map_id, st["max_points"]), self.label_reader().labels(query.key), query.camera,
            num_angles=st["num_angles"], restrict_to_view_cone=bool(c.restrict_to_view_cone),
            match_view=(lm.view_dir[pi].astype(np.float64), lm.view_spread[pi].astype(np.float64)),
            view_margin_deg=float(c.view_margin_deg), distance_margin=float(c.distance_margin),
            min_elevation_deg=float(c.min_elevation_deg), device=st["device"],
            max_batch_elements=int(c.max_batch_elements))
