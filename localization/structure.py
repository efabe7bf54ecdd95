"""Structure-based localization: SIFT 2D-3D matching against an SfM map, then P3P-RANSAC (``--method p3p``).

:meth:`StructureLocalizer.prepare` runs the cached, resumable steps in the main process, one ``main`` each:
SIFT for database and query images (:func:`reconstruction.features.main`), per-map point descriptors
(:func:`reconstruction.sfm_map.main_maps`) and 2D-3D matches of every query (:func:`localization.matching.main`),
each in an HDF5 file under the cache folder whose name carries its settings (paths in ``feature_path``,
``map_paths``, ``match_path``). :meth:`StructureLocalizer.localize` then only reads one query's matches and runs the
estimator, so it parallelises over worker processes.

Subclasses (the semantic filters) override :meth:`StructureLocalizer.select_matches` to drop matches or give
them sampling weights.
"""
from __future__ import annotations

import logging

import h5py
import numpy as np

from fgsn.utils.config import one_of
from reconstruction import features as feature_step
from reconstruction import sfm_map
from reconstruction.records import ImageRecord

from . import matching, ransac
from .base import Localizer, QueryResult

logger = logging.getLogger(__name__)


class StructureLocalizer(Localizer):
    """SIFT + faiss 2D-3D matching + P3P-RANSAC (ours, or pycolmap's for comparison)."""

    weighted_sampling = False  # True: select_matches returns sampling weights, which only our RANSAC can use

    default_conf = {
        "features": feature_step.default_conf,
        "map": sfm_map.default_conf,
        "matching": matching.default_conf,
        "ransac": {**ransac.default_conf, "estimator": "ours"},  # estimator: ours | pycolmap
    }
    conf_checks = {"features": feature_step.conf_checks, "map": sfm_map.conf_checks, "matching": matching.conf_checks,
                   "ransac": {**ransac.conf_checks, "estimator": one_of("ours", "pycolmap")}}

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        fname = feature_step.feature_filename(conf.features)
        self.feature_path = self.work_dir / fname
        self.match_path = self.work_dir / matching.matches_filename(fname, conf.matching)
        self.map_paths = {m: self.work_dir / sfm_map.map_filename(m, fname) for m in dataset.maps}
        self.bad_images: dict[str, str] = {}
        self._maps: dict[str, np.ndarray] = {}
        if conf.ransac.estimator not in ("ours", "pycolmap"):
            raise ValueError(f"ransac.estimator must be 'ours' or 'pycolmap', got {conf.ransac.estimator!r}")
        if conf.ransac.estimator == "pycolmap" and self.weighted_sampling:
            raise ValueError(f"ransac.estimator=pycolmap cannot draw {type(self).__name__}'s weighted minimal sets "
                             "(pycolmap's RANSAC samples uniformly): use ransac.estimator=ours")

    # ----------------------------------------------------------------------------------------------------- prepare
    def prepare(self, queries: list[ImageRecord] | None = None, engine=None) -> None:
        """Run the steps (each cached on disk, resumable per image / query): features of the database and of the
        queries (unreadable queries are recorded in ``bad_images``), map descriptors per map, 2D-3D matches."""
        ds, c = self.dataset, self.conf
        feature_step.main(c.features, [(r.key, r.path) for r in ds.database], self.feature_path, engine=engine)
        feature_step.main(c.features, [(q.key, q.path) for q in ds.queries], self.feature_path, skip_errors=True,
                          engine=engine)
        self.bad_images = feature_step.failed_images(self.feature_path, [q.key for q in ds.queries])
        sfm_map.main_maps(c.map, ds, self.feature_path, self.map_paths, engine=engine)
        matching.main(c.matching, [(q.key, q.map_id) for q in ds.queries], self.feature_path, self.map_paths,
                      self.match_path, engine=engine)

    # ---------------------------------------------------------------------------------------------------- localize
    def map_points(self, map_id: str) -> np.ndarray:
        """(M, 3) world coordinates of the map's points (loaded once per process)."""
        if map_id not in self._maps:
            with h5py.File(self.map_paths[map_id], "r") as f:
                self._maps[map_id] = f["xyz"][()]
        return self._maps[map_id]

    def load_matches(self, query: ImageRecord) -> dict[str, np.ndarray]:
        """Keypoints (K, 2), bearings (K, 3), points3D (K, 3), point_idx (K,) of one query's 2D-3D matches."""
        raw = matching.read_matches(self.match_path, query.key)
        qi, pi = raw["query_idx"], raw["point_idx"]
        kps = feature_step.read_features(self.feature_path, query.key, ("keypoints",))["keypoints"][qi].astype(np.float64)
        return {"keypoints": kps, "bearings": query.camera.bearings(kps),
                "points3D": self.map_points(query.map_id)[pi], "point_idx": pi, "query_idx": qi}

    def select_matches(self, query: ImageRecord, matches: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Hook for match filters: returns (keep mask (K,), sampling weights over kept matches or None, info)."""
        return np.ones(len(matches["point_idx"]), bool), None, {}

    def localize(self, query: ImageRecord, rng: np.random.Generator) -> QueryResult:
        if query.key in self.bad_images:
            return QueryResult(query.name, False, info={"reason": self.bad_images[query.key]})
        matches = self.load_matches(query)
        keep, weights, info = self.select_matches(query, matches)
        b, X, kp = matches["bearings"][keep], matches["points3D"][keep], matches["keypoints"][keep]
        n = int(keep.sum())
        rconf = dict(self.conf.ransac)
        if rconf.pop("estimator") == "pycolmap":
            res = ransac.pycolmap_ransac(kp, X, query.camera, rconf)
        else:
            res = ransac.p3p_ransac(b, X, query.camera.focal, rng, weights, rconf)
        if weights is not None and res.num_inliers > 0:  # how much of the sampling mass the final inliers got
            info["weight_on_inliers"] = float(weights[res.inliers].sum() / max(weights.sum(), 1e-300))
        if n < 4:
            info["reason"] = f"only {n} matches"
        elif not res.success:
            info["reason"] = f"{res.num_inliers} inliers < min_num_inliers"
        return QueryResult(query.name, res.success, res.cam_from_world, n, res.num_inliers, info=info)
