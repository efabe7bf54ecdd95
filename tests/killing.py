"""Kill-and-resume harness of the long-job tests (issue 13): run a ``fgsn-loc`` command of this checkout in a
subprocess, SIGKILL it (its whole process group, Dask workers included) as soon as a marker shows that it is
partway, then run the resume command to completion; check that no partial file is left behind.

Typical use::

    reference = run_cli(cli("segment", ...), tmp_path / "reference.log")
    kill_when(cli("segment", ...), lambda: count_groups(out) >= 2, tmp_path / "killed.log")
    resumed = run_cli(cli("segment", ...), tmp_path / "resumed.log")
    assert_clean(out.parent)
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import h5py

REPO = Path(__file__).resolve().parents[1]


def cli(*args) -> list[str]:
    """The command line of ``fgsn-loc ARGS`` from this checkout (``python -m evaluation.cli``, run in the
    repository root, so that the imports resolve here and not to another installed copy)."""
    return [sys.executable, "-m", "evaluation.cli", *map(str, args)]


def _env() -> dict[str, str]:
    # one thread everywhere (torch, faiss, BLAS): the runs repeat exactly and the tests share the machine politely
    return {**os.environ, "GLOG_minloglevel": "2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def run_cli(cmd: Sequence[str], log: Path, timeout: float = 300) -> str:
    """Run ``cmd`` to completion (output to ``log``); returns its output. Fails with the output's tail when it
    exits with an error or runs past ``timeout`` seconds."""
    with open(log, "wb") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{_tail(log)}"
    return log.read_text(errors="replace")


def kill_when(cmd: Sequence[str], partway: Callable[[], bool], log: Path, timeout: float = 300,
              poll_s: float = 0.01) -> str:
    """Start ``cmd`` (output to ``log``) and SIGKILL its process group as soon as ``partway()`` is true.

    ``partway`` is polled every ``poll_s`` seconds; an exception in it (a file being written) counts as False.
    Fails, with the output's tail, when the command ends before it is partway or ``timeout`` passes. Returns the
    killed run's output.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    reached = False
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                reached = bool(partway())
            except (OSError, ValueError, KeyError, RuntimeError):
                reached = False
            if reached:
                break
            time.sleep(poll_s)
    finally:
        ended = proc.poll()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert ended is None, f"the run ended (exit status {ended}) before it could be killed:\n{_tail(log)}"
    assert reached, f"the run was not partway after {timeout} s:\n{_tail(log)}"
    return log.read_text(errors="replace")


def restored_iteration(output: str) -> int:
    """The iteration of a trainer's ``Restored <checkpoint> at iteration N`` log line (fails without one)."""
    found = re.findall(r"Restored \S+ at iteration (\d+)", output)
    assert len(found) == 1, f"expected one 'Restored ... at iteration N' line, got {found}"
    return int(found[0])


def assert_clean(root: Path) -> None:
    """No temporary file of an atomic write (``*.tmp``) is left under ``root``, and every HDF5 file there opens
    and reads in full."""
    leftovers = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*.tmp"))
    assert not leftovers, f"temporary files left: {leftovers}"
    for path in Path(root).rglob("*.h5"):
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


def kill_experiment(command: Callable[..., list[str]], tmp_path: Path, experiment: str, train_rows: int = 3) -> dict:
    """The first half of the trainers' kill test (``train-fgsn``, ``pretrain-seg``): an uninterrupted reference run
    under ``tmp_path / "reference"``, then a run under ``tmp_path / "killed"`` SIGKILLed once its ``metrics.csv``
    holds ``train_rows`` training rows. ``command(output_root, *flags)`` gives the command line. Returns ``ref`` /
    ``out`` (the two experiment folders), ``saved`` (the killed run's last checkpoint) and ``killed_lines`` (its
    metrics.csv lines); :func:`restore_experiment` is the second half."""
    import csv

    import torch

    ref, out = tmp_path / "reference" / experiment, tmp_path / "killed" / experiment
    run_cli(command(tmp_path / "reference"), tmp_path / "reference.log")

    def rows():
        return [r for r in csv.DictReader(open(out / "metrics.csv")) if r["event"] == "train"]

    kill_when(command(tmp_path / "killed"), lambda: len(rows()) >= train_rows, tmp_path / "killed.log")
    return {"ref": ref, "out": out, "saved": torch.load(out / "checkpoints" / "last.pt", weights_only=True),
            "killed_lines": (out / "metrics.csv").read_text().splitlines(keepends=True)}


def restore_experiment(command: Callable[..., list[str]], tmp_path: Path, saved: dict) -> str:
    """Run the killed experiment of :func:`kill_experiment` again with ``--restore``; it must start from the
    checkpoint ``saved``. Returns its output."""
    resumed = run_cli(command(tmp_path / "killed", "--restore"), tmp_path / "resumed.log")
    assert restored_iteration(resumed) == saved["iteration"]
    return resumed


def assert_same_training(ref: Path, out: Path, saved: dict, killed_lines: list[str]) -> None:
    """The restored experiment ``out`` ended as the reference ``ref``: the same last.pt weights and metrics, every
    metrics.csv row once with the same values (wall-clock time aside), and the rows logged before the killed run's
    checkpoint ``saved`` kept byte for byte (not redone); nothing partial left."""
    import csv

    import torch

    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert b["iteration"] == a["iteration"] and b["metrics"] == a["metrics"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k

    def rows(path):  # every column but the wall-clock time
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(open(path))]

    assert rows(out / "metrics.csv") == rows(ref / "metrics.csv")
    kept = saved["log_rows"]["metrics.csv"] + 1  # the header and the rows up to the checkpoint
    assert (out / "metrics.csv").read_text().splitlines(keepends=True)[:kept] == killed_lines[:kept]
    assert_clean(out)
