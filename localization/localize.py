"""Batch localization of a benchmark's queries: ``fgsn-loc localize``.

Outputs in ``OUT``:
    config.yaml     the merged configuration, saved before any work
    log.txt         the log
    results.jsonl   one line per query, appended and fsync'ed as each query finishes
                    (schema in :mod:`localization.submission`)
    submission.txt  the visuallocalization.net file, validated before it is written
    failed.txt      queries that could not be localized, with the reason
    cache/          features, map descriptors and matches (HDF5, resumable), unless ``cache_dir`` is set

A run killed at any point and restarted with ``--resume`` localizes only the queries missing from
``results.jsonl``; every query's random generator is seeded from (``seed``, query key), so the final
submission does not depend on interruptions, on ``--workers`` or on the order of the queries.

Parallel runs use Dask distributed (:class:`fgsn.utils.parallel.Engine`, one per run and shared by its steps, or
the caller's, shared by several runs): ``--scheduler ADDRESS`` sends batches of queries to an existing cluster
(``dask scheduler`` + ``dask worker``, or dask-jobqueue); without it, ``--workers N`` > 1 starts a local cluster of
N single-threaded worker processes. Only this process (the client) writes ``results.jsonl``, as batches complete;
a worker that dies loses only its running batch, which the scheduler runs again elsewhere, so every query is
written once. Assumptions: the workers see the dataset and the cache folder at the same paths (a shared
filesystem) and have this package installed.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.config import between, merge_config, save_config
from fgsn.utils.errors import ConfigError, OutputExistsError
from fgsn.utils.io import ImageReadError
from fgsn.utils.logging import progress, setup_logging
from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options
from fgsn.utils.registry import lookup
from fgsn.utils.seeding import keyed_rng
from reconstruction.datasets import SeasonsDataset, load_dataset, parse_slices
from reconstruction.records import DatasetError

from . import submission as sub
from .base import Localizer, QueryResult

logger = logging.getLogger(__name__)

# method name -> "module:Class" (a Localizer subclass); imported only when chosen
METHODS: dict[str, str] = {
    "p3p": "localization.structure:StructureLocalizer",
    "apr": "localization.apr.localizer:APRLocalizer",
    "ssmc": "localization.ssmc:SSMCLocalizer",
    "gsmc": "localization.gsmc:GSMCLocalizer",
    "pfsl": "localization.pfsl:PFSLLocalizer",
}

default_conf = {
    "method": "p3p",  # a key of METHODS
    "seed": 0,  # base seed; each query's generator is seeded from (seed, query key)
    "workers": 1,  # processes localizing queries in parallel (a local Dask cluster when > 1)
    "scheduler": None,  # address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); overrides workers
    "batch_size": 16,  # most queries per Dask task (fewer when there would be < 4 tasks per worker)
    "cache_dir": None,  # features/maps/matches cache folder; default OUT/cache
}


def get_localizer_class(method: str) -> type[Localizer]:
    """The :class:`Localizer` subclass of ``method`` (a key of :data:`METHODS`); ValueError for an unknown one."""
    return lookup(METHODS, method, "method")


def build_conf(method: str, yaml_path=None, overrides=(), extra=None):
    """Defaults of the runner + ``localizer:`` section of the method's ``default_conf``, merged with YAML and
    overrides, keys and values checked (the method's ``conf_checks``; ConfigError names a wrong one)."""
    cls = get_localizer_class(method)
    base = {**default_conf, "method": method, "localizer": OmegaConf.to_container(cls.merged_conf())}
    checks = {"seed": between(0, integer=True), "workers": between(1, integer=True),
              "batch_size": between(1, integer=True), "localizer": cls.conf_checks}
    return merge_config(base, yaml_path=yaml_path, overrides=overrides, extra=extra, checks=checks)


def _changed_keys(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) of every leaf where two nested dicts differ (a missing side: None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new), key=str)
                for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _run_one(localizer: Localizer, query, seed: int) -> QueryResult:
    t0 = time.perf_counter()
    try:
        result = localizer.localize(query, keyed_rng(seed, query.key))
    except (DatasetError, ImageReadError, OSError) as e:  # bad data for this query: a failed result; a bug stops
        logger.error("Query %s failed with an error: %s", query.name, e)
        result = QueryResult(query.name, False, info={"reason": f"error: {e}"})
    result.time_s = time.perf_counter() - t0
    return result


def _run_batch(localizer: Localizer, queries: Sequence, seed: int) -> list[tuple[str, QueryResult]]:
    return [(q.key, _run_one(localizer, q, seed)) for q in queries]


_EXECUTION_KEYS = ("workers", "scheduler", "batch_size")  # how a run is executed, not what it computes


def main(conf, dataset: SeasonsDataset, out_dir: Path, resume: bool = False, overwrite: bool = False,
         engine: Engine | None = None) -> Path:
    """Localize every query of ``dataset`` and write results, submission and failure list to ``out_dir``.

    Args:
        conf: from :func:`build_conf` (runner keys + ``localizer`` section).
        dataset: the benchmark.
        out_dir: output folder.
        resume: continue a previous run in ``out_dir`` (its saved config must match ``conf``; keys the saved
            config lacks, added to the defaults later, count with their default values).
        overwrite: discard previous results in ``out_dir``.
        engine: run every parallel step there (:class:`fgsn.utils.parallel.Engine`, left open for the caller's
            next run, e.g. ``fgsn-loc ablate``'s); None: an engine of ``conf.workers`` / ``conf.scheduler`` for
            this run alone.
    Returns:
        Path of ``submission.txt``.
    Raises:
        OutputExistsError: ``out_dir`` holds results and neither ``resume`` nor ``overwrite`` is given.
        ConfigError: ``resume`` with a configuration different from the saved one (names the keys; a ValueError).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    conf_path = out_dir / "config.yaml"
    if results_path.exists() and results_path.stat().st_size > 0:
        if overwrite:
            results_path.unlink()
        elif not resume:
            raise OutputExistsError(f"{results_path} exists: pass --resume to continue that run or --overwrite to "
                                    "restart")
        elif conf_path.exists():
            # keys added to the defaults since that run count with their default values
            old = OmegaConf.merge(OmegaConf.to_container(build_conf(conf.method)), OmegaConf.load(conf_path))
            for k in _EXECUTION_KEYS:
                old.pop(k, None)
            new = OmegaConf.masked_copy(conf, [k for k in conf if k not in _EXECUTION_KEYS])
            changed = _changed_keys(OmegaConf.to_container(old), OmegaConf.to_container(new))
            if changed:
                shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed[:3]) + (" ..." if len(changed) > 3 else "")
                raise ConfigError(f"--resume with a configuration different from {conf_path} ({shown}); pass "
                                  "--overwrite to restart with it, or use a new --out")
    save_config(conf, conf_path)
    setup_logging(out_dir / "log.txt")
    cache_dir = Path(conf.cache_dir) if conf.cache_dir else out_dir / "cache"
    localizer = get_localizer_class(conf.method)(conf.localizer, dataset, cache_dir)
    done = sub.read_results(results_path, repair=True)
    todo = [q for q in dataset.queries if q.name not in done]
    with Engine(int(conf.workers), conf.scheduler) if engine is None else contextlib.nullcontext(engine) as engine:
        localizer.prepare(todo, engine)
        _localize_all(localizer, todo, engine, conf, results_path)
    return finalize(dataset, results_path, out_dir)


def _localize_all(localizer: Localizer, todo: list, engine: Engine, conf, results_path: Path) -> None:
    logger.info("Localizing %d queries with %s, %s.", len(todo), conf.method,
                f"Dask ({engine.scheduler or f'{engine.workers} local workers'})" if engine.parallel else "1 process")
    with open(results_path, "a") as f:
        # one writer (this process), results appended and fsync'ed as they come
        for key, result in progress(engine.imap(functools.partial(_run_batch, seed=int(conf.seed)), todo, localizer,
                                                int(conf.batch_size)), total=len(todo),
                                    desc=f"localize ({conf.method})", unit="query", log=logger):
            f.write(sub.result_to_json(result, key) + "\n")
            f.flush()
            os.fsync(f.fileno())


def finalize(dataset: SeasonsDataset, results_path: Path, out_dir: Path) -> Path:
    """Write ``submission.txt`` and ``failed.txt`` from ``results.jsonl``; log a summary."""
    records = sub.read_results(results_path)
    missing = [q.name for q in dataset.queries if q.name not in records]
    if missing:
        logger.warning("%d queries have no result (e.g. %s); they are written as failed.", len(missing), missing[:3])
    poses = {name: sub.pose_from_record(r) for name, r in records.items()}
    path, failed = sub.write_submission(dataset, poses, out_dir / "submission.txt")
    reasons = {n: r.get("info", {}).get("reason", "not localized") for n, r in records.items()}
    reasons.update({n: "no result" for n in missing})
    sub.write_failed_list(out_dir / "failed.txt", failed, reasons)
    times = [r["time_s"] for r in records.values()]
    logger.info("Localized %d / %d queries (median %.2f s per query); submission: %s",
                len(dataset.queries) - len(failed), len(dataset.queries), float(np.median(times)) if times else 0.0, path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["cmu", "robotcar"])
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--slices", help="CMU slices, e.g. 2,3,4 (default: all present)")
    parser.add_argument("--method", default=default_conf["method"], choices=sorted(METHODS))
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_engine_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="discard previous results in --out")
    parser.add_argument("--config", type=Path, help="YAML configuration")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (sets localizer.checkpoint; APR)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. localizer.ransac.num_iterations=1000")


def run(args: argparse.Namespace) -> int:
    """``fgsn-loc localize``: 0, or 1 when no query was localized (the commonest reasons are logged)."""
    extra = engine_options(args)
    if args.checkpoint is not None:
        extra["localizer"] = {"checkpoint": str(args.checkpoint)}
    conf = build_conf(args.method, args.config, args.overrides, extra)
    dataset = load_dataset(args.dataset, args.root, parse_slices(args.slices))  # before OUT exists: nothing left
    setup_logging(args.out / "log.txt")
    main(conf, dataset, args.out, resume=args.resume, overwrite=args.overwrite)
    records = sub.read_results(args.out / "results.jsonl")
    if records and not any(r.get("success") for r in records.values()):
        reasons = Counter(r.get("info", {}).get("reason", "not localized") for r in records.values())
        logger.error("No query was localized; commonest reasons: %s",
                     "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3)))
        return 1
    return 0
