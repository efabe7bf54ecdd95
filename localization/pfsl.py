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
   ``sigma_rot_rad``; a visual-odometry step brings its own noise instead (``odometry.visual.noise: residuals``,
   :func:`vo_step_noise`: the covariance of its rotation and translation direction from the essential matrix's
   inlier residuals and the spread of its metric-scale ratios), plus ``sigma_t_min_m``.
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

Odometry (``odometry.source``, :func:`reconstruction.odometry.sequence_odometry`): ``file`` reads
``ROOT/<map_id>/odometry/<condition>.txt`` (the demo dataset's layout: lines ``name_prev name_cur qw qx qy qz tx
ty tz`` = cur_from_prev); the demo's files are exact, so by default they are perturbed with the odometry noise
model (``odometry.perturb_file``). ``vo`` reads an Oxford RobotCar SDK ``vo.csv`` (``odometry.vo_csv``, per
traversal) and moves it to the camera with the dataset's extrinsics. ``visual`` computes visual odometry from the
query images (:mod:`reconstruction.visual_odometry`: frame-to-frame SIFT matches, essential matrix; its metric
scale from the filter's mean pose and the map, :func:`vo_scale_from_state`, **ours**). ``auto`` uses the file,
else the ``vo.csv``, else visual odometry, and **never query ground truth**. ``gt``
synthesises the increments from ground-truth relative poses plus that noise, for ablations only: every result then
says ``info["odometry"] = "synthesised-from-gt"`` and the log warns.

Stationary labels (``stationary.labels``): ``all``; a list of label ids; ``paper``: the FGSN paper's rule
(supplementary C.2), label c is stationary when p_c(c) / p_p(c) > ``stationary.paper_ratio`` (0.2), p_c the
distribution of the labels over the correspondences of a correspondence dataset (``stationary.correspondence``,
read by :mod:`fgsn.data.correspondence`; the FGSN's training correspondences), p_p over all pixels of its images,
both segmented with the run's label source; or ``consistency`` **(ours)**: per label n_corr / (n_corr +
n_noncorr) over the same correspondences, kept when at least ``stationary.min_ratio``.

Where things are: the filter itself as pure functions in :mod:`localization.particle_filter`; the odometry
sources in :mod:`reconstruction.odometry`; here the configuration and the localizer that runs the filter over a
benchmark's sequences.

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
from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.config import any_of, between, list_of, one_of
from fgsn.utils.io import write_text_atomic
from fgsn.utils.logging import progress
from fgsn.utils.parallel import Engine
from fgsn.utils.seeding import keyed_rng
from reconstruction.camera import Camera
from reconstruction.features import read_features
from reconstruction.geometry import camera_center, compose
from reconstruction.odometry import sequence_odometry
from reconstruction.records import DatasetError, ImageRecord
from reconstruction.semantics import LabelReader, labels_at
from reconstruction.visual_odometry import TwoViewMotion, two_view_motion

from .base import QueryResult
from .particle_filter import MapPoints, correspondence_pixel_ratio, label_consistency, project_visible, run_filter
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
        "method": "p3p",  # p3p: a single-image P3P-RANSAC estimate | database: the database poses of the map (no matches)
        "prior_sigma_t_m": 2.0,  # database: spread of the positions around the drawn database poses, metres
        "prior_sigma_rot_rad": 0.2,  # database: spread of the rotations around them, radians
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
        "source": "auto",  # auto (file, else vo.csv, else visual; never ground truth) | file | vo | visual | gt
        "perturb_file": True,  # add the noise below to odometry read from a file (the demo's files are exact)
        "vo_csv": "vo/{condition}/vo.csv",  # RobotCar SDK visual odometry per traversal, relative to the dataset root
        "vo_frame_from_camera": None,  # 4x4 file camera -> VO frame; null = the dataset's extrinsics (camera -> car)
        "visual": {  # visual odometry from the query images (source visual, or auto without a file or vo.csv)
            "ratio": 0.8,  # ratio test of the frame-to-frame SIFT matches
            "max_error_px": 1.0,  # essential-matrix RANSAC threshold, pixels
            "min_inliers": 30,  # fewer inliers: no increment for that frame (the filter re-initialises)
            "scale_radius_px": 3.0,  # metric scale: map points projected within this of a VO keypoint, pixels
            "scale_min_pairs": 10,  # ... at least this many (else the last measured scale)
            "noise": "residuals",  # prediction noise of a VO step: residuals (its own, reconstruction.visual_odometry
            # .motion_covariance and the spread of the scale ratios) | fixed (pfsl.motion, as for odometry files)
            "noise_scale": 1.0,  # residuals: factor on the estimated sigmas (ours; 1 = as estimated)
        },
        "noise_t_per_m": 0.05,  # odometry translation noise per metre travelled, metres / metre
        "noise_rot_rad": 0.01,  # odometry rotation noise per step, radians
    },
    "stationary": {
        "labels": "all",  # all | paper (p_c / p_p rule) | consistency (ours) | list of label ids
        "correspondence": None,  # paper / consistency: correspondence dataset root (sliceN/correspondence_data)
        "label_file": None,  # paper / consistency: labels of its images (names = sliceN/<image path>); null = segment
        "paper_ratio": 0.2,  # paper: stationary when p_c / p_p > this (FGSN paper, supplementary C.2)
        "min_ratio": 0.5,  # consistency: stationary when n_corr / (n_corr + n_noncorr) >= this
    },
}


_POSITIVE, _FRACTION = between(0, lo_open=True), between(0, 1)
conf_checks = {  # fgsn.utils.config.check_conf
    "num_particles": between(1, integer=True),
    "state": one_of("3dof", "6dof"),
    "gravity": one_of("estimate", "database"),
    "motion": {"sigma_t_per_m": between(0), "sigma_t_min_m": between(0), "sigma_rot_rad": between(0)},
    "likelihood": {"model": one_of("label", "agreement"), "alpha": between(0, 1, lo_open=True, hi_open=True),
                   "tau": _POSITIVE, "lam": between(0), "q_min": between(0, 1, lo_open=True)},
    "visibility": {"max_points": between(1, integer=True), "distance_scale": list_of(_POSITIVE, 2),
                   "cone_margin_deg": between(0, 180), "min_depth_m": between(0)},
    "resample_ess": _FRACTION,
    "init": {"method": one_of("p3p", "database"), "prior_sigma_t_m": between(0), "prior_sigma_rot_rad": between(0),
             "min_inliers": between(3, integer=True), "sigma_t_m": between(0), "sigma_rot_rad": between(0)},
    "reinit": {"patience": between(1, integer=True), "min_visible": between(0, integer=True),
               "min_agreement": _FRACTION},
    "odometry": {"source": one_of("auto", "file", "vo", "visual", "gt"),
                 "visual": {"ratio": between(0, 1, lo_open=True), "max_error_px": _POSITIVE,
                            "min_inliers": between(5, integer=True), "scale_radius_px": _POSITIVE,
                            "scale_min_pairs": between(1, integer=True), "noise": one_of("residuals", "fixed"),
                            "noise_scale": _POSITIVE},
                 "noise_t_per_m": between(0), "noise_rot_rad": between(0)},
    "stationary": {"labels": any_of(one_of("all", "paper", "consistency"), list_of(between(0, integer=True))),
                   "paper_ratio": between(0), "min_ratio": _FRACTION},
}


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


def _filter_batch(localizer: "PFSLLocalizer", batch: list[tuple[str, list[ImageRecord]]]) -> list[tuple[str, dict]]:
    """Engine task: filter a batch of sequences (name, time-ordered records) -> (name, sequence file content)."""
    return [(name, _jsonable(localizer.filter_sequence(name, records))) for name, records in batch]


def vo_scale_from_state(motion: TwoViewMotion, cam_from_world_prev: np.ndarray, points: MapPoints, camera: Camera,
                        visibility: dict, radius_px: float = 3.0, min_pairs: int = 10,
                        with_spread: bool = False) -> float | tuple[float, float] | None:
    """Metric scale of a unit-baseline visual-odometry step from the filter's state and the map **(ours)**.

    The labelled map points visible from the previous frame's mean pose (the filter's visibility model,
    :func:`localization.particle_filter.project_visible`) are projected into that frame; each VO point whose
    keypoint has a projected map point within ``radius_px`` gives the ratio of the map point's depth to the VO
    depth; the scale is their median.

    Args:
        motion: the step, its points triangulated in the previous camera frame at unit baseline.
        cam_from_world_prev: (3, 4) the filter's mean pose at the previous frame.
        points: the labelled map points.
        camera: the previous frame's camera.
        visibility: PFSL's ``visibility`` section (distance_scale, cone_margin_deg, min_depth_m).
        radius_px: largest keypoint - projection distance of a pair, pixels.
        min_pairs: fewer pairs than this: None (no measurement).
        with_spread: also return the relative standard deviation of that median, estimated from the ratios' own
            spread: 1.2533 x 1.4826 MAD / median / sqrt(n) (the median's efficiency under Gaussian noise and the MAD
            as a robust sigma; the pairs are treated as independent).
    Returns:
        metres per unit baseline, or (scale, relative sigma) with ``with_spread``, or None.
    """
    from scipy.spatial import cKDTree

    T = np.asarray(cam_from_world_prev, np.float64)
    if len(motion.points) < min_pairs:
        return None
    C = camera_center(T)
    # only points within their largest visible distance can be visible: project those (the same visible set)
    near = np.flatnonzero(np.linalg.norm(points.xyz - C, axis=1) <= points.d_max * visibility["distance_scale"][1])
    pts = points.subset(near)
    uv, vis = project_visible(T[None, :, :3], C[None], pts.xyz, pts.d_min, pts.d_max, pts.view_dir, pts.view_spread,
                              camera, visibility["distance_scale"], np.radians(visibility["cone_margin_deg"]),
                              visibility["min_depth_m"])
    uv, vis = uv[0], vis[0]
    if vis.sum() < min_pairs:
        return None
    depth = (pts.xyz[vis] @ T[:, :3].T + T[:, 3])[:, 2]
    dist, nn = cKDTree(uv[vis]).query(motion.keypoints, distance_upper_bound=radius_px)
    ok = np.isfinite(dist)
    if ok.sum() < min_pairs:
        return None
    ratios = depth[nn[ok]] / motion.points[ok, 2]
    scale = float(np.median(ratios))
    if not with_spread:
        return scale
    mad = float(np.median(np.abs(ratios - scale)))
    return scale, 1.2533 * 1.4826 * mad / max(abs(scale), 1e-12) / np.sqrt(len(ratios))


def vo_step_noise(motion: TwoViewMotion, scale: float, scale_rel_sigma: float, factor: float = 1.0) -> dict:
    """Prediction noise of one visual-odometry step from its own residuals (``odometry.visual.noise: residuals``).

    Translation sigma per axis = factor x step length x sqrt(scale_rel_sigma^2 + sigma_dir^2) (the scale's relative
    spread along the step, the direction's angular spread across it, taken isotropic), rotation sigma = factor x
    the motion's per-axis rotation sigma (:func:`reconstruction.visual_odometry.motion_covariance`). The filter adds
    ``motion.sigma_t_min_m`` to the translation sigma (:func:`localization.particle_filter.run_filter`).

    Args:
        motion: the step (its ``sigma_rot_rad`` / ``sigma_dir_rad``; None counts as 0).
        scale: metres per unit baseline. scale_rel_sigma: relative sigma of the scale (:func:`vo_scale_from_state`).
        factor: inflation of both sigmas **(ours)**.
    Returns:
        ``{"sigma_t_m": metres, "sigma_rot_rad": radians}``.
    """
    sd, sr = motion.sigma_dir_rad or 0.0, motion.sigma_rot_rad or 0.0
    return {"sigma_t_m": float(factor * abs(scale) * np.hypot(scale_rel_sigma, sd)),
            "sigma_rot_rad": float(factor * sr)}


class PFSLLocalizer(SemanticLocalizer):
    """Semantic particle filter over query sequences (Stenborg et al. 2018); see the module docstring."""

    default_conf = {**SemanticLocalizer.default_conf, "pfsl": default_conf}
    conf_checks = {**SemanticLocalizer.conf_checks, "pfsl": conf_checks}

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        pc = conf.pfsl
        if pc.state not in ("3dof", "6dof"):
            raise ValueError(f"pfsl.state must be '3dof' or '6dof', got {pc.state!r}")
        if pc.gravity not in ("estimate", "database"):
            raise ValueError(f"pfsl.gravity must be 'estimate' or 'database', got {pc.gravity!r}")
        if pc.init.method not in ("p3p", "database"):
            raise ValueError(f"pfsl.init.method must be 'p3p' or 'database', got {pc.init.method!r}")
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
    def prepare(self, queries: list[ImageRecord] | None = None, engine=None) -> None:
        super().prepare(queries, engine)
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
        # one task per sequence on the engine (each seeded by its name: the serial run's files); this process
        # alone writes them, as they complete
        done = (engine or Engine()).imap(_filter_batch, list(todo.items()), self, batch_size=1)
        for name, result in progress(done, total=len(todo), desc="PFSL sequences", unit="sequence", log=logger):
            write_text_atomic(self.sequence_path(name), json.dumps(_jsonable(result)))

    def stationary_labels(self) -> list[int] | None:
        """The label ids used by the observation model (None = all), from ``pfsl.stationary``."""
        sc = self.conf.pfsl.stationary
        if isinstance(sc.labels, str):
            if sc.labels == "all":
                return None
            if sc.labels in ("paper", "consistency"):
                return self._measured_stationary(sc.labels)
            raise ValueError(f"pfsl.stationary.labels must be all, paper, consistency or a list of ids, got "
                             f"{sc.labels!r} (auto was renamed consistency: it is our measure, not the paper's)")
        return [int(v) for v in sc.labels]

    def _measured_stationary(self, rule: str) -> list[int]:
        """Stationary labels measured on a correspondence dataset segmented with the run's label source: ``paper``
        keeps p_c / p_p > ``paper_ratio`` (:func:`localization.particle_filter.correspondence_pixel_ratio`),
        ``consistency`` keeps n_corr / (n_corr + n_noncorr) >= ``min_ratio`` (:func:`label_consistency`)."""
        from fgsn.data.correspondence import load_samples

        sc = self.conf.pfsl.stationary
        if not sc.correspondence:
            raise ValueError(f"pfsl.stationary.labels={rule} needs pfsl.stationary.correspondence=PATH")
        samples = load_samples(sc.correspondence)
        if sc.label_file:
            path = Path(sc.label_file)
        else:
            if self.conf.semantics.source != "checkpoint":
                raise ValueError(f"pfsl.stationary.labels={rule} with semantics.source=labels needs "
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
        if rule == "paper":
            names = sorted({s.ref_name for s in samples} | {s.tgt_name for s in samples})
            score, thr, what = correspondence_pixel_ratio(pairs, [reader.labels(n) for n in names], K), \
                float(sc.paper_ratio), "p_c / p_p >"
            keep = [int(k) for k in np.flatnonzero(np.nan_to_num(score, nan=-1.0) > thr)]
        else:
            score, thr, what = label_consistency(pairs, K), float(sc.min_ratio), "n_corr / (n_corr + n_noncorr) >="
            keep = [int(k) for k in np.flatnonzero(np.nan_to_num(score, nan=-1.0) >= thr)]
        logger.info("PFSL stationary labels (%s %.2f over %d pairs): %d of %d: %s", what, thr, len(samples),
                    len(keep), K, keep)
        if not keep:
            raise ValueError(f"no stationary label with {what} {thr} (pfsl.stationary.labels={rule})")
        return keep

    def select_matches(self, query, matches):
        keep, weights, info = super().select_matches(query, matches)
        if self.conf.pfsl.init.ssmc:
            q_lab = self.label_reader().at(query.key, matches["keypoints"])
            keep &= consistent_matches(q_lab, self.labelled_map(query.map_id).label[matches["point_idx"]])
        return keep, weights, info

    def _single_image(self, query: ImageRecord, rng: np.random.Generator) -> tuple[np.ndarray | None, dict]:
        """The (re)initialisation of the filter at ``query``: a P3P-RANSAC pose (``init.method=p3p``), or the
        (D, 3, 4) database poses of the query's map and camera id (``database``: no 2D-3D matches)."""
        if self.conf.pfsl.init.method == "database":
            db = [d for d in self.dataset.database if d.map_id == query.map_id and d.cam_from_world is not None]
            same = [d for d in db if d.camera_id == query.camera_id] or db
            if not same:
                return None, {"frame": query.name, "reason": f"no database pose in map {query.map_id}"}
            return np.array([d.cam_from_world for d in same]), {"frame": query.name, "init": "database",
                                                                 "num_poses": len(same)}
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
            increments, source = sequence_odometry(records, self.dataset.root, pc.odometry, rng,
                                                   getattr(self.dataset, "rig_from_cam", {}).get(records[0].camera_id))
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
        visual, vo_stats = self._visual_increments(records, usable, points) if source == "visual" else (None, {})
        frames = []
        for j, i in enumerate(usable):  # unreadable frames are skipped: the odometry chains across them
            inc = visual[j] if visual is not None else increments[i]
            if visual is None and j > 0 and i != usable[j - 1] + 1:
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
            info = {"odometry": source, "event": st["event"], "pfsl_frame": j, **vo_stats.get(j, {})}
            for k in ("ess", "n_visible", "n_agree", "resampled", "diverged", "init_info", "reason", "gap"):
                if k in st:
                    info[k] = st[k]
            ms = match_stats.get(j, {})
            fr.update(success=bool(st["success"]), cam_from_world=st["cam_from_world"], info=info,
                      num_matches=int(ms.get("num_matches", 0)), num_inliers=int(ms.get("num_inliers", 0)))
        return out

    def _visual_increments(self, records: list[ImageRecord], usable: list[int], points: MapPoints) -> list:
        """Visual odometry between consecutive usable frames (:func:`reconstruction.visual_odometry.two_view_motion`
        on the feature file's SIFT): per usable frame None (first frame, or no reliable motion) or a callable of
        the filter's previous mean pose giving the metrically scaled increment (:func:`vo_scale_from_state`;
        when a frame's scale cannot be measured, the last measured one) and, with ``visual.noise: residuals``, its
        noise (:func:`vo_step_noise`); and per frame the statistics the filter filled in while running
        (``vo_inliers``, ``vo_scale``, ``vo_scale_measured``, ``vo_sigma_t_m``, ``vo_sigma_rot_rad``)."""
        vc, vis = self.conf.pfsl.odometry.visual, OmegaConf.to_container(self.conf.pfsl.visibility, resolve=True)
        feats = [read_features(self.feature_path, records[i].key) for i in usable]
        last: list[tuple[float, float] | None] = [None]

        def scaled(j, motion, camera):
            def increment(cam_from_world_prev):
                m = vo_scale_from_state(motion, cam_from_world_prev, points, camera, vis, float(vc.scale_radius_px),
                                        int(vc.scale_min_pairs), with_spread=True)
                stats[j] = {"vo_inliers": motion.num_inliers, "vo_scale": None if m is None else m[0],
                            "vo_scale_measured": m is not None}
                last[0] = m if m is not None else last[0]
                if last[0] is None:
                    return None
                if vc.noise == "fixed":
                    return motion.increment(last[0][0])
                noise = vo_step_noise(motion, *last[0], float(vc.noise_scale))
                stats[j].update(vo_sigma_t_m=noise["sigma_t_m"], vo_sigma_rot_rad=noise["sigma_rot_rad"])
                return motion.increment(last[0][0]), noise
            return increment

        out, stats = [None], {}
        for j in range(1, len(usable)):
            a, b = records[usable[j - 1]], records[usable[j]]
            m = two_view_motion(feats[j - 1]["keypoints"], feats[j - 1]["descriptors"], a.camera,
                                feats[j]["keypoints"], feats[j]["descriptors"], b.camera, float(vc.ratio),
                                float(vc.max_error_px), int(vc.min_inliers))
            out.append(None if m is None else scaled(j, m, a.camera))
        return out, stats

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
