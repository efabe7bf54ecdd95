"""Base of the semantic localizers (SSMC, GSMC, PFSL): structure-based localization plus a label source and
labelled maps.

:meth:`SemanticLocalizer.prepare` runs the structure-based stages (SIFT, map descriptors, 2D-3D matches; shared
with ``--method p3p`` through the cache names), then runs the label step on every database and query image with the configured
label source (:func:`reconstruction.semantics.main`: an FGSN / PSPNet checkpoint or a precomputed label file) and
the labelled map step on each map (:func:`reconstruction.label_map.main_maps`), every step on the run's
engine. Subclasses use :meth:`labelled_map` and :meth:`label_reader` in
``select_matches`` / ``localize``; both load lazily, once per process, so the localizer stays picklable.
"""
from __future__ import annotations

import logging

import numpy as np

from reconstruction import label_map, semantics
from reconstruction.records import ImageRecord
from reconstruction.geometry import gravity_in_camera
from reconstruction.label_map import LabelledMap
from reconstruction.semantics import LabelReader

from .structure import StructureLocalizer

logger = logging.getLogger(__name__)


class SemanticLocalizer(StructureLocalizer):
    """Structure-based localizer with per-pixel query labels and a labelled map (abstract: no filter itself)."""

    default_conf = {
        **StructureLocalizer.default_conf,
        "semantics": semantics.default_conf,
        "label_map": label_map.default_conf,
    }
    conf_checks = {**StructureLocalizer.conf_checks, "semantics": semantics.conf_checks,
                   "label_map": label_map.conf_checks}

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        name = semantics.source_name(conf.semantics)  # validates the label source before any work
        self.labels_path = semantics.labels_path(conf.semantics, self.work_dir)
        self.labelled_map_paths = {m: self.work_dir / label_map.labelled_map_filename(p, name)
                                   for m, p in self.map_paths.items()}
        self._labelled: dict[str, LabelledMap] = {}
        self._reader: LabelReader | None = None
        self._gravity: dict[tuple[str, str], np.ndarray] = {}

    def prepare(self, queries: list[ImageRecord] | None = None, engine=None) -> None:
        """The structure-based steps, then the label step (database images and readable queries) and the
        labelled map step (one task per map), all on ``engine`` when given (:class:`fgsn.utils.parallel.Engine`)."""
        super().prepare(queries, engine)
        ds, c = self.dataset, self.conf
        records = ds.database + [q for q in ds.queries if q.key not in self.bad_images]
        semantics.main(c.semantics, [(r.key, r.path) for r in records], self.labels_path, engine=engine)
        label_map.main_maps(c.label_map, ds, self.labels_path, self.map_paths, self.labelled_map_paths,
                            engine=engine)

    def labelled_map(self, map_id: str) -> LabelledMap:
        """The labelled map of ``map_id`` (rows aligned with :meth:`map_points`), loaded once per process."""
        if map_id not in self._labelled:
            self._labelled[map_id] = LabelledMap.load(self.labelled_map_paths[map_id])
        return self._labelled[map_id]

    def gravity(self, query: ImageRecord) -> np.ndarray:
        """(3,) world up in the query camera frame: mean over the database images of the same camera id (of the
        query's map if it has any, else of every map). Never uses the query's own pose."""
        key = (query.map_id, query.camera_id)
        if key not in self._gravity:
            db = [d for d in self.dataset.database if d.camera_id == query.camera_id and d.cam_from_world is not None]
            same_map = [d for d in db if d.map_id == query.map_id]
            if not db:
                raise ValueError(f"no database image with camera id {query.camera_id!r}: cannot estimate gravity")
            self._gravity[key] = gravity_in_camera(np.array([d.cam_from_world for d in same_map or db]), self.dataset.up)
        return self._gravity[key]

    def label_reader(self) -> LabelReader:
        """Reader of the query and database label maps (by image key)."""
        if self._reader is None:
            self._reader = LabelReader(self.labels_path)
        return self._reader

    def __getstate__(self):  # worker processes reload maps and reopen files lazily
        return {**self.__dict__, "_labelled": {}, "_reader": None, "_maps": {}}
