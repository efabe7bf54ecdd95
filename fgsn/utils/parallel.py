"""The one parallel engine of the project: batches of work items on Dask distributed, or in this process.

:class:`Engine` wraps a ``distributed.Client``: ``Engine(workers=N)`` starts a local cluster of N single-threaded
worker processes (N <= 1: no cluster, everything runs in this process), ``Engine(scheduler=ADDRESS)`` connects to
a running cluster (``dask scheduler`` + ``dask worker``, or dask-jobqueue). :meth:`Engine.imap` yields results as
tasks complete, so the caller (the only writer of every output file) writes them as they come: a run killed at
any moment leaves only complete entries, and a worker that dies loses only its running task, which the
scheduler runs again elsewhere (Dask's retry), so every item is yielded once.

Assumptions for a cluster: the workers have this package installed and see the inputs (dataset, caches) at the
same paths as the client (a shared filesystem).

Every command that runs a parallel step takes the same options, ``--workers N`` and ``--scheduler ADDRESS``
(:func:`add_engine_arguments`); :func:`engine_options` turns the given ones into ``Engine`` keyword arguments
(or configuration keys of the same names).
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Iterator, Sequence

logger = logging.getLogger(__name__)


class Engine:
    """Runs batches of work items in parallel (Dask) or serially.

    Args:
        workers: processes of the local cluster started on first use; <= 1 runs in this process.
        scheduler: address of a running Dask scheduler (e.g. ``tcp://10.0.0.5:8786``); overrides ``workers``.

    Use as a context manager (or call :meth:`close`) so that a local cluster is shut down.
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None):
        self.workers = int(workers)
        self.scheduler = scheduler
        self._client = self._cluster = None

    @property
    def parallel(self) -> bool:
        """True when work goes to Dask workers."""
        return self.scheduler is not None or self.workers > 1

    def client(self):
        """The ``distributed.Client`` (the local cluster is started on first use)."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler is None:
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=logging.ERROR)
            self._client = Client(self.scheduler or self._cluster)
            logger.info("Dask cluster %s: %d workers.", self._client.scheduler.address, self.num_workers())
        return self._client

    def num_workers(self) -> int:
        """Workers of the cluster (1 when serial)."""
        return max(1, len(self.client().scheduler_info()["workers"])) if self.parallel else 1

    def imap(self, fn: Callable[[Any, list], list], items: Sequence, shared: Any = None,
             batch_size: int = 16) -> Iterator:
        """Apply ``fn(shared, batch)`` to batches of ``items``; yield the elements of each returned list as the
        batches complete (completion order when parallel, item order when serial).

        Args:
            fn: a picklable top-level function; returns one list per batch (e.g. one result per item).
            items: the work items (picklable).
            shared: one object every task needs (e.g. a localizer or a configuration); sent once to each worker.
            batch_size: most items per task; fewer when that would leave fewer than 4 tasks per worker (load
                balance, and a killed run keeps more of its work). Serially, batches of one item.
        """
        items = list(items)
        if not items:
            return
        if not self.parallel:
            for item in items:
                yield from fn(shared, [item])
            return
        from distributed import as_completed

        client = self.client()
        step = max(1, min(int(batch_size), -(-len(items) // (4 * self.num_workers()))))
        # a fresh key (no content hash): an earlier call's scatter of an equal object may still be being released,
        # and its key would be lost under this call's tasks ("lost dependencies"). Wrapped in a list: scatter
        # sends a dict value by value under the dict's own keys, which the next call's dict would reuse.
        shared_f = client.scatter([shared], broadcast=True, hash=False)[0]
        futures = [client.submit(fn, shared_f, items[i:i + step], pure=False) for i in range(0, len(items), step)]
        for future in as_completed(futures):
            yield from future.result()
            future.release()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` and ``--scheduler ADDRESS`` (both default None: the config's value, or serial)."""
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes, a local Dask cluster when > 1 (default: config, 1)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. "
                        "tcp://10.0.0.5:8786 (overrides --workers)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_engine_arguments` that were given, as :class:`Engine` keyword arguments (also
    the configuration keys ``workers`` / ``scheduler`` of ``fgsn-loc localize`` and ``ablate``)."""
    opts: dict[str, Any] = {}
    if args.workers is not None:
        opts["workers"] = int(args.workers)
    if args.scheduler:
        opts["scheduler"] = args.scheduler
    return opts
