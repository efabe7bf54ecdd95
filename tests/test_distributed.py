"""The batch runner on Dask: a local cluster gives the serial run's submission, and a worker killed with SIGKILL
mid-run loses nothing (every query written once, same submission)."""
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from localization import localize
from localization.base import Localizer, QueryResult
from reconstruction.datasets import SeasonsDataset
from reconstruction.geometry import random_rotation
from reconstruction.records import ImageRecord

METHOD = "test-random-pose"


class RandomPoseLocalizer(Localizer):
    """Stand-in method: a pose drawn from the query's own generator, after ``delay_s`` of work."""

    default_conf = {"delay_s": 0.0}

    def localize(self, query, rng):
        time.sleep(float(self.conf.delay_s))
        T = np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], axis=1)
        return QueryResult(query.name, True, T, num_matches=100, num_inliers=50)


def _dataset(n):
    queries = []
    for i in range(n):
        stamp = 1_300_000_000_000_000 + 100_000 * i
        name = f"img_{i:05d}_c0_{stamp}us.jpg"
        queries.append(ImageRecord(name, f"query/{name}", Path("/nonexistent") / name, None, "c0", "snow",
                                   ("urban",), stamp * 1e-6, "slice2"))
    return SeasonsDataset("cmu", Path("/nonexistent"), [], queries, {})


def _run(out, n, monkeypatch, **conf):
    monkeypatch.setitem(localize.METHODS, METHOD, f"{__name__}:RandomPoseLocalizer")
    overrides = [f"{k}={v}" for k, v in conf.items()]
    return localize.main(localize.build_conf(METHOD, overrides=overrides), _dataset(n), out)


def _result_names(out):
    return [line.split('"name": "')[1].split('"')[0] for line in (out / "results.jsonl").read_text().splitlines()]


def test_local_cluster_same_submission_as_serial(tmp_path, monkeypatch):
    serial = _run(tmp_path / "serial", 40, monkeypatch)
    dask = _run(tmp_path / "dask", 40, monkeypatch, workers=2, batch_size=3)
    assert dask.read_bytes() == serial.read_bytes()
    assert sorted(_result_names(tmp_path / "dask")) == sorted(_result_names(tmp_path / "serial"))


def test_killed_worker_loses_nothing(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    n = 160
    serial = _run(tmp_path / "serial", n, monkeypatch)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        results = tmp_path / "dask" / "results.jsonl"
        killed = []

        def kill_one():
            deadline = time.time() + 120
            while time.time() < deadline:
                if results.exists() and len(results.read_text().splitlines()) >= 20:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one)
        killer.start()
        out = _run(tmp_path / "dask", n, monkeypatch, scheduler=cluster.scheduler_address, batch_size=4,
                   **{"localizer.delay_s": 0.05})
        killer.join()
    assert killed, "the worker was not killed during the run"
    names = _result_names(tmp_path / "dask")
    assert len(names) == n and len(set(names)) == n  # every query once
    assert out.read_bytes() == serial.read_bytes()


def _echo_shared(shared, batch):
    return [(shared["value"], x) for x in batch]


def test_engine_shared_dicts_one_after_another():
    """Consecutive imap calls whose shared objects are dicts with the same keys: each call's tasks see its own
    dict (a dict given to client.scatter is scattered value by value under its keys, so equal keys of the next
    call collided with the previous call's data being released: 'lost dependencies')."""
    from fgsn.utils.parallel import Engine

    with Engine(workers=2) as engine:
        for value in range(6):
            got = sorted(engine.imap(_echo_shared, list(range(20)), shared={"value": value, "other": 1}, batch_size=2))
            assert got == [(value, x) for x in range(20)]
