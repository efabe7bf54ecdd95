"""The interface every localization method implements, so that one batch runner serves them all.

A method is a :class:`Localizer` subclass registered in :data:`localization.localize.METHODS`. The batch
runner (``fgsn-loc localize``) builds it once per process, calls :meth:`Localizer.prepare` once in the main
process (feature extraction, map loading, anything cached to disk), then :meth:`Localizer.localize` for each
query, possibly in worker processes, and writes one :class:`QueryResult` per query.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from fgsn.utils.config import merge_defaults
from fgsn.utils.parallel import Engine

from reconstruction.datasets import SeasonsDataset

from reconstruction.records import ImageRecord


@dataclass
class QueryResult:
    """The outcome of localizing one query.

    Attributes:
        name: the query's submission name (:attr:`ImageRecord.name`).
        success: False when no pose could be estimated; ``cam_from_world`` is then None.
        cam_from_world: (3, 4) estimated pose, world -> camera, metres.
        num_matches: 2D-3D matches given to the estimator (0 for methods without matches).
        num_inliers: inliers of the final pose.
        time_s: wall-clock seconds spent on this query.
        info: method-specific extras (JSON-serialisable), e.g. the reason for a failure.
    """

    name: str
    success: bool
    cam_from_world: np.ndarray | None = None
    num_matches: int = 0
    num_inliers: int = 0
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Localizer:
    """Base class of localization methods.

    Subclasses set ``default_conf`` (a dict, one comment per key with its unit), optionally ``conf_checks`` (the
    value checks of :func:`fgsn.utils.config.check_conf`, nested alike), and implement ``localize``.
    ``conf`` is the method's section of the run configuration, already merged with ``default_conf``.
    """

    default_conf: dict[str, Any] = {}
    conf_checks: dict[str, Any] = {}

    def __init__(self, conf: DictConfig, dataset: SeasonsDataset, work_dir: Path):
        self.conf = conf
        self.dataset = dataset
        self.work_dir = Path(work_dir)

    @classmethod
    def merged_conf(cls, conf: dict | DictConfig | None = None) -> DictConfig:
        """``default_conf`` merged with ``conf``, keys and values checked (:func:`fgsn.utils.config.merge_defaults`;
        ConfigError names a wrong key or value)."""
        return merge_defaults(cls.default_conf, conf, cls.conf_checks, f"{cls.__name__} configuration")

    def prepare(self, queries: list[ImageRecord] | None = None, engine: Engine | None = None) -> None:
        """One-off work in the main process before any query (e.g. feature extraction to an HDF5 cache).

        Args:
            queries: the queries still to localize (a resumed run passes those without a result); None: all.
                Methods whose one-off work is cached on disk per query may ignore it.
            engine: where parallel steps run (:class:`fgsn.utils.parallel.Engine`); None: in this process.
        """

    def localize(self, query: ImageRecord, rng: np.random.Generator) -> QueryResult:
        """Estimate the pose of one query. Must not raise for a query that merely cannot be localized:
        return ``QueryResult(success=False, info={"reason": ...})`` instead."""
        raise NotImplementedError
