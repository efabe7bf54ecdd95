"""The batch runner at benchmark scale: 50,000 queries, a crash (SIGKILL) half-way, ``--resume``.

    python benchmarks/bench_runner.py [--queries 50000] [--out outputs/bench/runner]

A synthetic CMU-layout query list (benchmark names, no images) is localized by a constant-cost stand-in method
(:class:`RandomPoseLocalizer`: a pose drawn from the query's own generator, so the answer does not depend on
interruptions), so that what is measured is the runner itself: results appended and fsync'ed per query,
resume, submission writing and validation. Steps, all in fresh output folders:

1. reference: the stand-in's ``localize`` called for every query in a plain loop (no runner);
2. an uninterrupted run of ``localization.localize.main``;
3. the same run in a child process killed with SIGKILL once half of the queries have a result, then resumed.

Prints the wall times, the ratios runner / plain loop, the resumed run's re-done queries (must be 0) and whether
its submission is identical to the uninterrupted one, and the peak memory of this process.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from _common import REPO  # noqa: E402
from fgsn.utils.seeding import keyed_rng  # noqa: E402
from localization import localize, submission  # noqa: E402
from localization.base import Localizer, QueryResult  # noqa: E402
from reconstruction.datasets import SeasonsDataset  # noqa: E402
from reconstruction.records import ImageRecord  # noqa: E402
from reconstruction.geometry import random_rotation  # noqa: E402

METHOD = "bench-random-pose"


class RandomPoseLocalizer(Localizer):
    """Stand-in method: a random pose per query from the query's generator (constant, tiny cost)."""

    def localize(self, query: ImageRecord, rng: np.random.Generator) -> QueryResult:
        T = np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], axis=1)
        return QueryResult(query.name, True, T, num_matches=100, num_inliers=50)


def make_dataset(n: int) -> SeasonsDataset:
    """``n`` CMU-named queries (8 conditions x 2 cameras, 100 ms apart), no images, one map."""
    queries = []
    for i in range(n):
        cam = i % 2
        stamp = 1_300_000_000_000_000 + 100_000 * i
        name = f"img_{i:05d}_c{cam}_{stamp}us.jpg"
        queries.append(ImageRecord(name, f"query/{name}", Path("/nonexistent") / name, None, f"c{cam}",
                                   f"condition-{i % 8}", ("urban",), stamp * 1e-6, "slice2"))
    return SeasonsDataset("cmu", Path("/nonexistent"), [], queries, {})


def run(n: int, out: Path, resume: bool = False) -> float:
    localize.METHODS[METHOD] = "bench_runner:RandomPoseLocalizer"
    conf = localize.build_conf(METHOD)
    t0 = time.perf_counter()
    localize.main(conf, make_dataset(n), out, resume=resume)
    return time.perf_counter() - t0


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50000)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "runner")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: the run to be killed
    args = parser.parse_args()
    if args.child:
        run(args.queries, args.child)
        return
    n = args.queries
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    ds = make_dataset(n)
    loc = RandomPoseLocalizer({}, ds, args.out)
    t0 = time.perf_counter()
    for q in ds.queries:
        loc.localize(q, keyed_rng(0, q.key))
    t_plain = time.perf_counter() - t0

    t_full = run(n, args.out / "full")

    crashed = args.out / "crashed"
    child = subprocess.Popen([sys.executable, __file__, "--queries", str(n), "--child", str(crashed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while count_lines(crashed / "results.jsonl") < n // 2:
        if child.poll() is not None:
            raise RuntimeError("the child run ended before it could be killed")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = count_lines(crashed / "results.jsonl")
    t_resume = run(n, crashed, resume=True)
    after = count_lines(crashed / "results.jsonl")
    records = submission.read_results(crashed / "results.jsonl")
    same = (crashed / "submission.txt").read_bytes() == (args.out / "full" / "submission.txt").read_bytes()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{n} queries (stand-in method: a random pose per query)\n")
    print("| step | wall time | per query | ratio to the plain loop |")
    print("|---|---|---|---|")
    print(f"| plain loop over localize() (reference) | {t_plain:.1f} s | {t_plain / n * 1e3:.3f} ms | 1.00 |")
    print(f"| runner, uninterrupted | {t_full:.1f} s | {t_full / n * 1e3:.3f} ms | {t_full / t_plain:.2f} |")
    print(f"| runner, resumed after SIGKILL at {before} results | {t_resume:.1f} s | "
          f"{t_resume / max(n - before, 1) * 1e3:.3f} ms (per remaining query) | - |")
    print(f"\nresults after resume: {after} lines for {len(records)} queries (re-done: {after - n}); "
          f"submission identical to the uninterrupted run: {same}; peak memory of this process {peak_mb:.0f} MB")
    if len(records) != n or not same:
        raise SystemExit("resume check FAILED")


if __name__ == "__main__":
    main()
