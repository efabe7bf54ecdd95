"""Results files and visuallocalization.net submissions.

``results.jsonl``: one JSON object per line and query, appended as queries finish::

    {"name": ..., "key": ..., "success": bool, "num_matches": int, "num_inliers": int, "time_s": float,
     "cam_from_world": {"qvec": [w, x, y, z], "tvec": [x, y, z]} | null, "info": {...}}

``submission.txt``: one line per query, ``name qw qx qy qz tx ty tz`` (world-to-camera rotation and translation),
in the dataset's query order. CMU names are ``img_XXXXX_cK_<us>us.jpg`` (one file for all slices); RobotCar names
are ``<camera>/<ts>.jpg`` (condition omitted).

Failed queries: the benchmark requires a line for every query, and a failure must never receive another
image's pose. A failed query gets :data:`FAILED_QVEC` / :data:`FAILED_TVEC`: the identity rotation with the
camera centre 10^6 m below the world origin, which lies outside every threshold, so the query counts as a
failure. ``failed.txt`` beside the submission lists those queries with the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from fgsn.utils.errors import UserError
from fgsn.utils.io import atomic_path
from reconstruction.datasets import SeasonsDataset
from reconstruction.geometry import pose_from_qvec_tvec, rotmat_to_qvec
from reconstruction.records import read_text

from .base import QueryResult

FAILED_QVEC = np.array([1.0, 0.0, 0.0, 0.0])
FAILED_TVEC = np.array([0.0, 0.0, 1.0e6])  # camera centre (0, 0, -1e6): a pose no threshold accepts

_NAME_PATTERNS = {
    "cmu": re.compile(r"^img_\d+_c\d+_\d+us\.jpg$"),
    "robotcar": re.compile(r"^(rear|left|right)/\d+\.jpg$"),
}


class SubmissionError(UserError, ValueError):
    """A submission or results file is invalid; the message names the file, line and problem."""


def result_to_json(result: QueryResult, key: str) -> str:
    pose = None
    if result.success and result.cam_from_world is not None:
        T = np.asarray(result.cam_from_world)
        pose = {"qvec": rotmat_to_qvec(T[:, :3]).tolist(), "tvec": T[:, 3].tolist()}
    return json.dumps({"name": result.name, "key": key, "success": bool(result.success and pose is not None),
                       "num_matches": int(result.num_matches), "num_inliers": int(result.num_inliers),
                       "time_s": round(float(result.time_s), 4), "cam_from_world": pose, "info": result.info})


def read_results(path: Path, repair: bool = False) -> dict[str, dict]:
    """Read ``results.jsonl`` into name -> record (the last record wins for a name written twice).

    A run killed while writing can leave a partial last line: with ``repair`` it is cut off the file (the
    query is then localized again), otherwise it raises.

    Raises:
        SubmissionError: a malformed line (not the last one, or the last one without ``repair``): not UTF-8, not
            JSON, or not a record (an object with a string ``name``; when ``success``, a ``cam_from_world``
            that is null or holds a ``qvec`` of 4 and a ``tvec`` of 3 numbers, as :func:`pose_from_record`
            reads it).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    records: dict[str, dict] = {}
    offset = 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        end = offset + len(line) + 1
        if line.strip():
            try:
                rec = json.loads(line)
                _check_record(rec)
                records[rec["name"]] = rec
            except (ValueError, RecursionError):  # ValueError: not UTF-8, not JSON (or too long an int), not a record
                is_last = i >= len(lines) - 1 or not any(x.strip() for x in lines[i + 1 :])
                if not (repair and is_last):
                    raise SubmissionError(f"{path}:{i + 1}: malformed result line {line[:80]!r}") from None
                with open(path, "r+b") as f:
                    f.truncate(offset)
                break
        offset = end
    return records


def _is_numbers(v, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) for x in v)


def _check_record(rec) -> None:
    """Raise ValueError unless ``rec`` is a results record that :func:`pose_from_record` reads."""
    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
        raise ValueError("not an object with a string name")
    pose = rec.get("cam_from_world")
    if rec.get("success") and pose is not None and not (
            isinstance(pose, dict) and _is_numbers(pose.get("qvec"), 4) and _is_numbers(pose.get("tvec"), 3)):
        raise ValueError("cam_from_world is not {qvec: 4 numbers, tvec: 3 numbers}")


def pose_from_record(rec: dict) -> np.ndarray | None:
    """A results.jsonl record -> (3, 4) cam_from_world, or None for a failed query."""
    if not rec.get("success") or rec.get("cam_from_world") is None:
        return None
    return pose_from_qvec_tvec(np.array(rec["cam_from_world"]["qvec"]), np.array(rec["cam_from_world"]["tvec"]))


def _format_line(name: str, qvec: np.ndarray, tvec: np.ndarray) -> str:
    return f"{name} " + " ".join(f"{v:.10g}" for v in (*qvec, *tvec))


def write_submission(dataset: SeasonsDataset, poses: dict[str, np.ndarray | None], path: Path) -> tuple[Path, list[str]]:
    """Write and validate a visuallocalization.net submission for every query of ``dataset``.

    Args:
        dataset: gives the expected query names and order.
        poses: name -> (3, 4) cam_from_world, or None (or absent) for a failed query.
        path: output file; written to a temporary file and renamed once valid.
    Returns:
        (path, names of the failed queries).
    Raises:
        SubmissionError: a pose with non-finite values or a non-rotation, or an invalid name.
    """
    path = Path(path)
    failed = []
    lines = []
    for q in dataset.queries:
        T = poses.get(q.name)
        if T is None:
            failed.append(q.name)
            qvec, tvec = FAILED_QVEC, FAILED_TVEC
        else:
            T = np.asarray(T, dtype=np.float64)
            R = T[:, :3]
            if not np.all(np.isfinite(T)) or abs(np.linalg.det(R) - 1) > 1e-6 or np.abs(R.T @ R - np.eye(3)).max() > 1e-6:
                raise SubmissionError(f"{path}: pose of {q.name} is not a finite rigid transform")
            qvec, tvec = rotmat_to_qvec(R), T[:, 3]
        lines.append(_format_line(q.name, qvec, tvec))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
        validate_submission(tmp, dataset)
    return path, failed


def validate_submission(path: Path, dataset: SeasonsDataset) -> dict[str, np.ndarray]:
    """Check a submission file as the benchmark would and return name -> cam_from_world.

    Checks: every query of ``dataset`` present exactly once, no other name, the benchmark's name format,
    8 fields per line, finite values, unit quaternions (|1 - ||q||| < 1e-6 after the file's rounding).

    Raises:
        SubmissionError: naming the file, line and problem.
    """
    poses = read_submission(path, pattern=_NAME_PATTERNS.get(dataset.kind))
    expected = {q.name for q in dataset.queries}
    missing = sorted(expected - poses.keys())
    extra = sorted(poses.keys() - expected)
    if missing:
        raise SubmissionError(f"{path}: {len(missing)} queries missing, e.g. {missing[:3]}")
    if extra:
        raise SubmissionError(f"{path}: {len(extra)} names that are not queries, e.g. {extra[:3]}")
    return poses


def read_submission(path: Path, pattern: re.Pattern | None = None) -> dict[str, np.ndarray]:
    """Read ``name qw qx qy qz tx ty tz`` lines into name -> (3, 4) cam_from_world.

    Raises:
        SubmissionError: missing file, not UTF-8 text, wrong field count, non-finite values, non-unit
            quaternion, a name twice or not matching ``pattern``; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: submission file not found")
    poses = {}
    for i, line in enumerate(read_text(path, SubmissionError).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise SubmissionError(f"{path}:{i}: expected 'name qw qx qy qz tx ty tz', got {len(parts)} fields")
        name = parts[0]
        if pattern is not None and not pattern.match(name):
            raise SubmissionError(f"{path}:{i}: name {name!r} is not in the benchmark's format")
        try:
            vals = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise SubmissionError(f"{path}:{i}: non-numeric value") from None
        if not np.all(np.isfinite(vals)):
            raise SubmissionError(f"{path}:{i}: non-finite value")
        if abs(np.linalg.norm(vals[:4]) - 1) > 1e-6:
            raise SubmissionError(f"{path}:{i}: quaternion norm {np.linalg.norm(vals[:4]):.8f} is not 1")
        if name in poses:
            raise SubmissionError(f"{path}:{i}: {name} appears twice")
        poses[name] = pose_from_qvec_tvec(vals[:4], vals[4:])
    return poses


def is_failed_pose(cam_from_world: np.ndarray) -> bool:
    """True for the placeholder pose written for failed queries."""
    return bool(np.allclose(cam_from_world[:, 3], FAILED_TVEC) and np.allclose(cam_from_world[:, :3], np.eye(3)))


def write_failed_list(path: Path, failed: Iterable[str], reasons: dict[str, str]) -> Path:
    """``name<TAB>reason`` per failed query (written atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\t{reasons.get(n, 'not localized')}\n" for n in failed))
    return Path(path)
