"""The APR baselines as a :class:`~localization.base.Localizer` for ``fgsn-loc localize --method apr``.

The runner builds :class:`APRLocalizer` with ``conf`` = this ``default_conf`` merged with the run's settings
(``checkpoint`` from ``--checkpoint``). :meth:`APRLocalizer.prepare` predicts every query of the dataset in one
batched (or, for VLocNet, sequential) pass in the main process; :meth:`APRLocalizer.localize` returns the cached
pose, computing it on demand when called in a process where ``prepare`` did not run.

A query of another map (world frame) than the one the model was trained on is returned as failed, with the
reason in ``info``; so is a query whose image cannot be read (the pass skips it: the other queries, and for
VLocNet the rest of its sequence, are still predicted). If the batched pass of ``prepare`` fails (e.g. out of
memory), ``localize`` predicts on demand, one query (VLocNet: one sequence) at a time; a sequence whose pass
fails is failed with the reason once, not re-run for each of its queries.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from reconstruction.records import ImageRecord

from ..base import Localizer, QueryResult
from .inference import load_checkpoint, predict_images
from .pose import pose_to_cam_from_world

logger = logging.getLogger(__name__)


class APRLocalizer(Localizer):
    default_conf = {
        "checkpoint": "???",  # path of a `fgsn-loc train-apr` checkpoint (checkpoints/checkpoint_last.pt)
        "device": "cpu",  # "cpu" or "cuda"
        "batch_size": 16,  # images per inference batch
        "num_threads": 1,  # torch CPU threads
    }

    def __init__(self, conf, dataset, work_dir):
        super().__init__(conf, dataset, work_dir)
        self._model = None  # loaded on first use (prepare or localize), not in the constructor
        self.data_conf: dict = {}
        self.map_ids: set[str] = set()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        self._failed: dict[str, str] = {}  # query name -> reason (unreadable image, failed inference pass)

    @property
    def model(self):
        """The checkpoint's model, loaded from ``conf.checkpoint`` on first access."""
        if self._model is None:
            import torch

            torch.set_num_threads(int(self.conf.num_threads))
            self._model, ckpt = load_checkpoint(self.conf.checkpoint, self.conf.device)
            self.data_conf = ckpt["config"]["data"]
            self.map_ids = set(ckpt.get("map_ids", []))
            logger.info("APR model %s from %s (iteration %d, trained on %s).", self._model.conf.name,
                        self.conf.checkpoint, ckpt["iteration"], ", ".join(sorted(self.map_ids)) or "?")
        return self._model

    def _predict(self, queries: list[ImageRecord]) -> None:
        model = self.model
        queries = [q for q in queries if q.name not in self._cache and q.name not in self._failed and self._map_ok(q)]
        if not queries:
            return
        t0 = time.time()
        errors: dict[int, str] = {}
        pos, qv = predict_images(model, [q.path for q in queries], [q.sequence for q in queries],
                                 [q.timestamp_s for q in queries], self.data_conf["image_size"],
                                 self.data_conf["crop_size"], int(self.conf.batch_size), errors=errors)
        dt = (time.time() - t0) / len(queries)
        for i, (q, p, r) in enumerate(zip(queries, pos, qv)):
            if i in errors:
                self._failed[q.name] = errors[i]
            else:
                self._cache[q.name] = (p, r, dt)

    def _map_ok(self, query: ImageRecord) -> bool:
        self.model  # noqa: B018 (loads the checkpoint and its map ids)
        return not self.map_ids or query.map_id in self.map_ids

    def prepare(self, queries: list[ImageRecord] | None = None, engine=None) -> None:
        """Predict ``queries`` (all when None; a resumed run passes those still to do) in one pass; for a
        sequential model (VLocNet) every query of their sequences, since the chain starts at a sequence's start."""
        self.model  # noqa: B018 (a missing or bad checkpoint fails here, loudly)
        if queries is None:
            queries = list(self.dataset.queries)
        elif getattr(self.model, "sequential", False):
            seqs = {q.sequence for q in queries}
            queries = [q for q in self.dataset.queries if q.sequence in seqs]
        try:
            self._predict(queries)
        except Exception as e:  # e.g. out of memory: localize() retries per query (per sequence for VLocNet)
            logger.warning("Batched APR inference failed (%s); predicting queries on demand.", e)
        if self._failed:
            logger.warning("APR: %d queries cannot be predicted (e.g. %s).", len(self._failed),
                           next(iter(self._failed.values())))

    def localize(self, query: ImageRecord, rng: np.random.Generator) -> QueryResult:
        if not self._map_ok(query):
            return QueryResult(query.name, False, info={
                "reason": f"map {query.map_id} is not the model's map ({', '.join(sorted(self.map_ids))})"})
        if query.name not in self._cache and query.name not in self._failed:
            sequential = getattr(self.model, "sequential", False)
            batch = [q for q in self.dataset.queries if q.sequence == query.sequence] if sequential else [query]
            try:
                self._predict(batch)
            except Exception as e:  # fail the whole batch once (not a re-run of the sequence for each of its queries)
                self._failed.update({q.name: f"APR inference failed: {e}" for q in batch
                                     if q.name not in self._cache and self._map_ok(q)})
        if query.name in self._failed:
            return QueryResult(query.name, False, info={"reason": self._failed[query.name]})
        p, q, dt = self._cache[query.name]
        return QueryResult(query.name, True, pose_to_cam_from_world(p, q), time_s=float(dt),
                           info={"method": "apr", "model": str(self.model.conf.name)})
