import numpy as np
import pytest

from localization.base import QueryResult
from localization.submission import (
    SubmissionError, is_failed_pose, read_results, read_submission, result_to_json, validate_submission,
    write_submission,
)
from reconstruction.camera import Camera
from reconstruction.datasets import SeasonsDataset
from reconstruction.records import ImageRecord
from reconstruction.geometry import random_rotation


def _dataset(names, kind="cmu"):
    cam = Camera("PINHOLE", 10, 10, (5.0, 5.0, 5.0, 5.0))
    qs = [ImageRecord(n, n, None, cam, "c0", "snow", ("urban",), 0.0, "slice2") for n in names]
    return SeasonsDataset(kind, None, [], qs, {})


NAMES = ["img_00001_c0_1288000000000000us.jpg", "img_00002_c0_1288000001000000us.jpg"]


def test_write_validate_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    T = np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], axis=1)
    path, failed = write_submission(_dataset(NAMES), {NAMES[0]: T, NAMES[1]: None}, tmp_path / "s.txt")
    assert failed == [NAMES[1]]
    poses = read_submission(path)
    np.testing.assert_allclose(poses[NAMES[0]], T, atol=1e-8)
    assert is_failed_pose(poses[NAMES[1]])  # a failure never gets another image's pose
    lines = path.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == NAMES and all(len(ln.split()) == 8 for ln in lines)


def test_validation_errors(tmp_path):
    ds = _dataset(NAMES)
    f = tmp_path / "s.txt"
    f.write_text(f"{NAMES[0]} 1 0 0 0 0 0 0\n")
    with pytest.raises(SubmissionError, match="1 queries missing"):
        validate_submission(f, ds)
    f.write_text(f"{NAMES[0]} 1 0 0 0 0 0 0\n{NAMES[1]} 0.9 0 0 0 0 0 0\n")
    with pytest.raises(SubmissionError, match=r"s.txt:2: quaternion norm"):
        validate_submission(f, ds)
    f.write_text(f"{NAMES[0]} 1 0 0 0 0 0 nan\n")
    with pytest.raises(SubmissionError, match=r"s.txt:1: non-finite"):
        read_submission(f)
    f.write_text("night/rear/1.jpg 1 0 0 0 0 0 0\n")
    with pytest.raises(SubmissionError, match="not in the benchmark's format"):
        validate_submission(f, _dataset(["rear/1.jpg"], "robotcar"))
    with pytest.raises(SubmissionError, match="pose of .* is not a finite rigid transform"):
        write_submission(ds, {NAMES[0]: np.full((3, 4), np.nan)}, tmp_path / "x.txt")


def test_results_partial_last_line(tmp_path):
    f = tmp_path / "results.jsonl"
    f.write_text(result_to_json(QueryResult(NAMES[0], False, info={"reason": "x"}), "k0") + "\n" + '{"name": "img_0')
    with pytest.raises(SubmissionError, match="results.jsonl:2: malformed"):
        read_results(f)
    recs = read_results(f, repair=True)
    assert list(recs) == [NAMES[0]] and recs[NAMES[0]]["info"]["reason"] == "x"
    assert f.read_text().endswith("\n") and len(f.read_text().splitlines()) == 1
