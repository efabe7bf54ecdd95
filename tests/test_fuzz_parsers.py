"""Fuzzed file readers (issue 13, item 5): every reader of a dataset, map, odometry, correspondence or submission
file either reads a mutated file or raises its documented error, with a one-line message naming the file.

Each test writes a small VALID file in the real format (with the project's own writers where it has them), checks
that it reads back as written, then lets hypothesis mutate it: truncation at a byte or a line, deleted, duplicated
or swapped lines, tokens (or digit runs inside tokens) replaced by random text, non-numbers, nan / inf, huge
numbers, inserted lines, and random bytes (invalid UTF-8 included). Any other exception (IndexError, KeyError,
UnicodeDecodeError, OverflowError, numpy errors, ...) is a bug of the reader. Nothing needs ``../shared/data``.

Bounded for CI: ``FUZZ_EXAMPLES`` examples per test (default 40; the file runs in well under a minute on one
core), derandomized (the same examples on every run), no example database. A longer fuzz, e.g.::

    FUZZ_EXAMPLES=2000 python -m pytest -q -p no:cacheprovider tests/test_fuzz_parsers.py
    FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 python -m pytest -q -p no:cacheprovider tests/test_fuzz_parsers.py  # new seeds

(``FUZZ_RANDOM=1`` draws fresh random examples each run instead of the fixed ones; a failure prints the
falsifying file content, to be pinned with ``@example``.)
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fgsn.data.correspondence import CorrespondenceFileError, load_samples, read_correspondence_file
from localization.base import QueryResult
from localization.submission import (
    SubmissionError, is_failed_pose, pose_from_record, read_results, read_submission, result_to_json,
    validate_submission, write_submission,
)
from reconstruction import nvm, odometry
from reconstruction.camera import Camera
from reconstruction.datasets import (
    MapSource, SeasonsDataset, load_cmu, load_robotcar, read_cmu_intrinsics, read_matrix_4x4, read_name_list,
    read_pose_file, read_robotcar_intrinsics, read_robotcar_train_poses,
)
from reconstruction.geometry import pose_from_qvec_center, random_rotation
from reconstruction.records import DatasetError, ImageRecord
from reconstruction.sfm_map import load_reconstruction
from reconstruction.synthetic.writers import _odometry_lines, _pose_line, _write_correspondence, _write_lines

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not os.environ.get("FUZZ_RANDOM"),
                database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = [
    "nan", "-nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e308", "-1.7e308", "5e-324", "0", "-0",
    "-1", "1.5", "2147483648", "-2147483649", "4294967296", "9223372036854775808", "18446744073709551616",
    "9" * 25, "9" * 400, "1" * 5000, "0x10", "1_0", "1e", "+", "-", "", "x", "abc", "#", ".", "./", "..", "/",
    "...", "²", "١٢", "\x00", "\ufeff", "é", "\u2028", ",", ";", "1,2", "NVM_V3", "PINHOLE", "OPENCV", "FOO",
    "CAMERA", "null", "true", "[]", "{}", '"', "\\",
]
RAW_BYTES = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"\xf4\x90\x80\x80", b"\r", b"\r\n",
             b"\x00", b"\n", b"\n\n", b" ", b"\t", b"\x0b\x0c"]

_numbers = st.one_of(st.floats().map(repr), st.floats(allow_nan=False).map(lambda v: f"{v:.17g}"),
                     st.integers(-(2**70), 2**70).map(str))
_tokens = st.one_of(st.sampled_from(SPECIAL_TOKENS), _numbers, st.text(max_size=8))
_raw = st.one_of(st.sampled_from(RAW_BYTES), st.binary(min_size=1, max_size=8))
_SEP = re.compile(rb"([\s,]+)")
OPS = ("cut_byte", "cut_line", "del_line", "dup_line", "swap_lines", "token", "token", "digits", "digits",
       "del_token", "add_token", "bytes", "add_line")


def _index(draw, n: int) -> int:
    return draw(st.integers(0, max(n - 1, 0)))


@st.composite
def mutated(draw, seed: bytes, max_ops: int = 3) -> bytes:
    """``seed`` after 1 to ``max_ops`` random mutations (module docstring)."""
    doc = seed
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(OPS))
        lines = doc.split(b"\n")
        if op == "cut_byte":
            doc = doc[: draw(st.integers(0, len(doc)))]
        elif op == "cut_line":
            doc = b"\n".join(lines[: draw(st.integers(0, len(lines)))])
        elif op == "del_line":
            del lines[_index(draw, len(lines))]
            doc = b"\n".join(lines)
        elif op == "dup_line":
            lines.insert(_index(draw, len(lines) + 1), lines[_index(draw, len(lines))])
            doc = b"\n".join(lines)
        elif op == "swap_lines":
            i, j = _index(draw, len(lines)), _index(draw, len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            doc = b"\n".join(lines)
        elif op in ("token", "del_token", "add_token"):
            i = _index(draw, len(lines))
            parts = _SEP.split(lines[i])  # tokens at even indices, separators at odd ones
            k = 2 * _index(draw, (len(parts) + 1) // 2)
            new = draw(_tokens).encode("utf-8", "surrogatepass")
            if op == "token":
                parts[k] = new
            elif op == "del_token":
                parts[k] = b""
            else:
                parts[k] = parts[k] + b" " + new
            lines[i] = b"".join(parts)
            doc = b"\n".join(lines)
        elif op == "digits":  # a number inside a token: timestamps in names, counts, ids
            runs = list(re.finditer(rb"\d+", doc))
            if runs:
                m = runs[_index(draw, len(runs))]
                doc = doc[: m.start()] + draw(st.one_of(st.sampled_from(SPECIAL_TOKENS), _numbers)).encode(
                    "utf-8", "surrogatepass") + doc[m.end():]
        elif op == "bytes":
            i = draw(st.integers(0, len(doc)))
            junk = draw(_raw)
            doc = doc[:i] + junk + doc[i + (len(junk) if draw(st.booleans()) else 0):]
        else:  # add_line
            lines.insert(_index(draw, len(lines) + 1), draw(st.one_of(_tokens, st.text(max_size=40))).encode(
                "utf-8", "surrogatepass"))
            doc = b"\n".join(lines)
    return doc


def _expect(call, errors, names: str):
    """``call()``'s result, or None when it raised one of ``errors`` with a one-line message containing
    ``names`` (the file). Any other exception propagates: hypothesis reports it with the falsifying file."""
    try:
        return call()
    except errors as e:
        msg = str(e)
        assert len(msg.splitlines()) == 1, f"not a one-line message: {msg!r}"
        assert names in msg, f"message does not name {names}: {msg!r}"
        return None


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Seeds: small valid files in the real formats
# ---------------------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
CMU_NAMES = ["img_00001_c0_1288000000000000us.jpg", "img_00002_c0_1288000001000000us.jpg",
             "img_00003_c1_1288000002000000us.jpg"]
CMU_POSES = [np.concatenate([random_rotation(RNG), RNG.normal(size=(3, 1)) * 10], axis=1) for _ in CMU_NAMES]


def _seed_bytes(tmp_path: Path, write) -> bytes:
    """The bytes of a file written by ``write(path)`` (the project's writers write to a path)."""
    path = tmp_path / "seed.txt"
    write(path)
    data = path.read_bytes()
    path.unlink()
    return data


def _cmu_intrinsics_seed(tmp_path: Path) -> bytes:
    return _seed_bytes(tmp_path, lambda p: _write_lines(p, [
        "c0 OPENCV 1024 768 868.993378 866.063001 525.942323 420.042529 -0.399431 0.188924 0.000153 0.000571",
        "c1 PINHOLE 1024 768 873.382641 876.489513 529.324138 397.272397"],
        ["Camera list with one line of data per camera:",
         "  [Camera ID] [Distortion model] [w] [h] [fx] [fy] [cx] [cy] [k1] [k2] [p1] [p2]"]))


def _cmu_pose_seed(tmp_path: Path) -> bytes:
    return _seed_bytes(tmp_path, lambda p: _write_lines(p, [_pose_line(n, T) for n, T in zip(CMU_NAMES, CMU_POSES)]))


RC_INTRINSICS = b"fx 919.826667\nfy 921.386667\ncx 506.563333\ncy 335.270000\n"
RC_EXTRINSICS = b"1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,1\n"
RC_TRAIN_POSES = {f"night/rear/{ts}.png": np.concatenate([random_rotation(RNG), RNG.normal(size=(3, 1))], axis=1)
                  for ts in (1287489641000222, 1287489887001554)}


def _rc_train_seed() -> bytes:
    lines = []
    for name, T in RC_TRAIN_POSES.items():
        M = np.eye(4)
        M[:3] = T  # camera-to-world, as the file stores it
        lines.append(f"{name} " + " ".join(f"{v:.9f}" for v in M.ravel()))
    return ("\n".join(lines) + "\n").encode()


RC_TEST_LIST = b"rear/1287489641000222.png\nrear/1287489887001554.png\n"

NVM_CAMS = ["./overcast-reference/rear/100.png 500.0 1 0 0 0 0 0 0 0 0",
            "./overcast-reference/rear/200.png 500.0 0.5 0.5 0.5 0.5 1.5 -2 3 0 0"]
NVM_POINTS = ["1.0 2.0 3.0 255 128 0 2 0 7 10.5 -20.25 1 8 -1.5 2.5", "4 5 6 1 2 3 1 1 9 0.125 0.0",
              "-7.5 8 9.25 10.9 20 30 3 1 3 3.0 4.0 0 4 5.0 6.0 1 5 7.0 8.0"]
NVM_SINGLE = "\n".join(["NVM_V3", "", "2", *NVM_CAMS, "", "3", *NVM_POINTS]).encode() + b"\n"
NVM_SECOND = b"\n1\nsecond.png 1 1 0 0 0 0 0 0 0 0\n1\n1 2 3 4 5 6 1 0 0 0.5 0.5\n0\n"
NVM_MULTI = NVM_SINGLE + NVM_SECOND

NVM_CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))


def _odometry_seed(tmp_path: Path) -> bytes:
    frames = list(zip(CMU_NAMES, CMU_POSES))
    return _seed_bytes(tmp_path, lambda p: _write_lines(p, _odometry_lines(frames), [
        "name_prev name_cur qw qx qy qz tx ty tz: cur_from_prev (X_cur = R X_prev + t)"]))


VO_TIMES = [1287489641000222, 1287489641100222, 1287489641200222, 1287489641300222]


def _vo_seed() -> bytes:
    lines = [",".join(odometry.VO_HEADER)]
    for i in range(1, len(VO_TIMES)):
        lines.append(f"{VO_TIMES[i]},{VO_TIMES[i - 1]}," + ",".join(f"{v:.10e}" for v in
                                                                    (0.8, 0.01 * i, 0.0, 0.001, -0.002, 0.01 * i)))
    return ("\n".join(lines) + "\n").encode()


def _vo_records() -> list[ImageRecord]:
    """Two images of a night traversal, inside the time span of :func:`_vo_seed`."""
    cam = Camera("PINHOLE", 10, 10, (5.0, 5.0, 5.0, 5.0))
    return [ImageRecord(f"rear/{t}.jpg", f"images/night/rear/{t}.jpg", None, cam, "rear", "night", ("night",),
                        t * 1e-6, "all-merged") for t in (VO_TIMES[0] + 50000, VO_TIMES[2] + 50000)]


SUB_NAMES = CMU_NAMES


def _submission_seed(tmp_path: Path) -> bytes:
    """A submission of the 3 queries by the project's writer, the last one failed (the placeholder pose)."""
    poses = dict(zip(SUB_NAMES, [*CMU_POSES[:2], None]))
    return _seed_bytes(tmp_path, lambda p: write_submission(_dataset(SUB_NAMES), poses, p))


def _results_seed() -> bytes:
    ok = QueryResult(SUB_NAMES[0], True, cam_from_world=CMU_POSES[0], num_matches=120, num_inliers=80, time_s=0.5,
                     info={"map": "slice1"})
    failed = QueryResult(SUB_NAMES[1], False, info={"reason": "too few inliers"})
    return (result_to_json(ok, "slice1/query/" + SUB_NAMES[0]) + "\n"
            + result_to_json(failed, "slice1/query/" + SUB_NAMES[1]) + "\n").encode()


def _dataset(names, kind="cmu") -> SeasonsDataset:
    cam = Camera("PINHOLE", 10, 10, (5.0, 5.0, 5.0, 5.0))
    qs = [ImageRecord(n, n, None, cam, "c0", "snow", ("urban",), 0.0, "slice1") for n in names]
    return SeasonsDataset(kind, None, [], qs, {})


# ---------------------------------------------------------------------------------------------------------------
# Extended CMU Seasons / RobotCar Seasons text files
# ---------------------------------------------------------------------------------------------------------------


class TestDatasetFiles:
    def test_seeds_read_as_written(self, tmp_path):
        cams = read_cmu_intrinsics(_write(tmp_path / "intrinsics.txt", _cmu_intrinsics_seed(tmp_path)))
        assert sorted(cams) == ["c0", "c1"] and cams["c0"].model == "OPENCV" and cams["c1"].params[0] == 873.382641
        poses = read_pose_file(_write(tmp_path / "gt.txt", _cmu_pose_seed(tmp_path)))
        assert list(poses) == CMU_NAMES
        for T, T_gt in zip(poses.values(), CMU_POSES):
            np.testing.assert_allclose(T, T_gt, atol=1e-7)
        assert read_name_list(_write(tmp_path / "test.txt", _cmu_pose_seed(tmp_path))) == CMU_NAMES
        cam = read_robotcar_intrinsics(_write(tmp_path / "rear_intrinsics.txt", RC_INTRINSICS), (1024, 768))
        assert cam == Camera("PINHOLE", 1024, 768, (919.826667, 921.386667, 506.563333, 335.27))
        np.testing.assert_array_equal(read_matrix_4x4(_write(tmp_path / "ext.txt", RC_EXTRINSICS)), np.eye(4))
        train = read_robotcar_train_poses(_write(tmp_path / "train.txt", _rc_train_seed()))
        assert list(train) == [n[:-4] for n in RC_TRAIN_POSES]
        for T, T_gt in zip(train.values(), RC_TRAIN_POSES.values()):
            np.testing.assert_allclose(T, T_gt[:, :3].T @ np.concatenate([np.eye(3), -T_gt[:, 3:]], axis=1),
                                       atol=1e-8)

    @FUZZ
    @given(data=st.data())
    def test_cmu_intrinsics(self, tmp_path, data):
        path = _write(tmp_path / "intrinsics.txt", data.draw(mutated(_cmu_intrinsics_seed(tmp_path))))
        cams = _expect(lambda: read_cmu_intrinsics(path), DatasetError, str(path))
        if cams is not None:
            assert cams and all(isinstance(c, Camera) and c.width > 0 and c.height > 0 for c in cams.values())
            assert all(np.isfinite(c.params).all() for c in cams.values())

    @FUZZ
    @given(data=st.data())
    def test_pose_file(self, tmp_path, data):
        path = _write(tmp_path / "ground-truth-database-images-slice1.txt",
                      data.draw(mutated(_cmu_pose_seed(tmp_path))))
        poses = _expect(lambda: read_pose_file(path), DatasetError, str(path))
        if poses is not None:
            assert all(T.shape == (3, 4) for T in poses.values())

    @FUZZ
    @given(data=st.data())
    def test_name_list(self, tmp_path, data):
        path = _write(tmp_path / "test-images-slice1.txt", data.draw(mutated(_cmu_pose_seed(tmp_path))))
        names = _expect(lambda: read_name_list(path), DatasetError, str(path))
        if names is not None:
            assert all(isinstance(n, str) and n and not n.startswith("#") for n in names)

    @FUZZ
    @given(doc=mutated(RC_INTRINSICS))
    def test_robotcar_intrinsics(self, tmp_path, doc):
        path = _write(tmp_path / "rear_intrinsics.txt", doc)
        cam = _expect(lambda: read_robotcar_intrinsics(path, (1024, 768)), DatasetError, str(path))
        if cam is not None:
            assert cam.model == "PINHOLE" and len(cam.params) == 4 and np.isfinite(cam.params).all()

    @FUZZ
    @given(doc=mutated(RC_EXTRINSICS))
    def test_matrix_4x4(self, tmp_path, doc):
        path = _write(tmp_path / "rear_extrinsics.txt", doc)
        M = _expect(lambda: read_matrix_4x4(path), DatasetError, str(path))
        if M is not None:
            assert M.shape == (4, 4) and np.isfinite(M).all()

    @FUZZ
    @given(doc=mutated(_rc_train_seed()))
    @example(doc=b". " + b" ".join(b"%g" % v for v in np.eye(4).ravel()))  # was ValueError (Path.with_suffix)
    def test_robotcar_train_poses(self, tmp_path, doc):
        path = _write(tmp_path / "robotcar_v2_train.txt", doc)
        poses = _expect(lambda: read_robotcar_train_poses(path), DatasetError, str(path))
        if poses is not None:
            assert all(T.shape == (3, 4) and np.isfinite(T).all() for T in poses.values())


CMU_FILES = ("intrinsics.txt", "slice1/ground-truth-database-images-slice1.txt",
             "slice1/camera-poses/slice-1-gt-query-images-snow.txt", "slice1/test-images-slice1.txt")


def _cmu_tree(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A one-slice Extended CMU tree (2 database images, 2 queries, one with ground truth): (root, file -> bytes)."""
    root = tmp_path / "cmu"
    db = [_pose_line(n, T) for n, T in zip(CMU_NAMES[:2], CMU_POSES[:2])]
    queries = ["img_00010_c0_1288000010000000us.jpg", "img_00011_c1_1288000011000000us.jpg"]
    files = {CMU_FILES[0]: _cmu_intrinsics_seed(tmp_path),
             CMU_FILES[1]: ("\n".join(db) + "\n").encode(),
             CMU_FILES[2]: (_pose_line(queries[0], CMU_POSES[2]) + "\n").encode(),
             CMU_FILES[3]: ("\n".join(queries) + "\n").encode()}
    for rel, data in files.items():
        _write(root / rel, data)
    for q in queries:
        _write(root / "slice1" / "query" / q, b"")
    return root, files


RC_FILES = ("intrinsics/rear_intrinsics.txt", "extrinsics/rear_extrinsics.txt", "robotcar_v2_train.txt",
            "robotcar_v2_test.txt", "3D-models/all-merged/all.nvm")


def _rc_tree(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A RobotCar Seasons tree (2 reference images in the NVM model, 2 night queries with ground truth)."""
    root = tmp_path / "rc"
    files = dict(zip(RC_FILES, (RC_INTRINSICS, RC_EXTRINSICS, _rc_train_seed(), RC_TEST_LIST, NVM_SINGLE)))
    for rel, data in files.items():
        _write(root / rel, data)
    img = np.zeros((12, 16, 3), np.uint8)
    for rel in ("overcast-reference/rear/100", "overcast-reference/rear/200", "night/rear/1287489641000222",
                "night/rear/1287489887001554"):
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{rel}.jpg"), img)
    return root, files


class TestDatasetLoaders:
    """The loaders on a small tree with one of its files mutated (the test lists reach the loader only)."""

    def test_cmu_seed(self, tmp_path):
        root, _ = _cmu_tree(tmp_path)
        ds = load_cmu(root)
        assert [q.condition for q in ds.queries] == ["snow", "2010-10-25"] and len(ds.database) == 2

    @FUZZ
    @given(data=st.data())
    def test_cmu(self, tmp_path, data):
        shutil.rmtree(tmp_path / "cmu", ignore_errors=True)
        root, files = _cmu_tree(tmp_path)
        rel = data.draw(st.sampled_from(CMU_FILES))
        doc = _write(root / rel, data.draw(mutated(files[rel]))).read_bytes()
        if rel.startswith("slice1/test-images"):  # the listed query images exist: the names reach the loader
            for line in doc.split(b"\n"):
                name = line.strip().split(b" ")[0].decode("utf-8", "replace")
                if name and "/" not in name and name not in (".", "..") and "\x00" not in name:
                    try:
                        (root / "slice1" / "query" / name).touch()
                    except OSError:
                        pass
        ds = _expect(lambda: load_cmu(root), DatasetError, str(root))
        if ds is not None:
            assert ds.queries and all(isinstance(q.condition, str) for q in ds.queries)

    def test_robotcar_seed(self, tmp_path):
        root, _ = _rc_tree(tmp_path)
        ds = load_robotcar(root)
        assert len(ds.database) == 2 and len(ds.queries) == 2 and all(q.cam_from_world is not None for q in ds.queries)

    @FUZZ
    @given(data=st.data())
    def test_robotcar(self, tmp_path, data):
        shutil.rmtree(tmp_path / "rc", ignore_errors=True)
        root, files = _rc_tree(tmp_path)
        rel = data.draw(st.sampled_from(RC_FILES))
        _write(root / rel, data.draw(mutated(files[rel])))
        ds = _expect(lambda: load_robotcar(root), DatasetError, str(root))
        if ds is not None:
            assert ds.queries and all(q.name.startswith("rear/") for q in ds.queries)


# ---------------------------------------------------------------------------------------------------------------
# COLMAP text models (pycolmap's reader behind load_reconstruction)
# ---------------------------------------------------------------------------------------------------------------


def _colmap_seed(folder: Path) -> dict[str, bytes]:
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=64, height=48,
                                                    params=[50.0, 50.0, 32.0, 24.0]))
    for i in range(2):
        image = pycolmap.Image(name=f"img_{i}.jpg", keypoints=np.array([[10.0, 12.0], [30.5, 20.25], [40.0, 40.0]]),
                               camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose_from_qvec_center(np.array([1.0, 0, 0, 0]),
                                                                                       np.array([i, 0.0, 0]))))
    for p in range(2):
        track = pycolmap.Track()
        track.add_element(1, p)
        track.add_element(2, p)
        rec.add_point3D(np.array([p, 1.0, 5.0]), track, np.array([10, 20, 30], np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    rec.write_text(folder)
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.txt"))}


class TestColmapText:
    FILES = ("cameras.txt", "images.txt", "points3D.txt", "frames.txt", "rigs.txt")

    def _dataset(self, model: Path) -> SeasonsDataset:
        return SeasonsDataset("cmu", model.parent, [], [], {"slice1": MapSource("slice1", model, model, "colmap")})

    def test_seed(self, tmp_path):
        files = _colmap_seed(tmp_path / "sparse")
        assert set(self.FILES) <= set(files)
        rec = load_reconstruction(self._dataset(tmp_path / "sparse"), "slice1")
        assert len(rec.images) == 2 and len(rec.points3D) == 2 and rec.images[2].name == "img_1.jpg"

    @FUZZ
    @given(data=st.data())
    def test_model(self, tmp_path, data):
        model = tmp_path / "sparse"
        seed = _colmap_seed(tmp_path / "seed")
        shutil.rmtree(model, ignore_errors=True)
        model.mkdir()
        for name, content in seed.items():
            (model / name).write_bytes(content)
        name = data.draw(st.sampled_from(self.FILES))
        _write(model / name, data.draw(mutated(seed[name])))
        rec = _expect(lambda: load_reconstruction(self._dataset(model), "slice1"), DatasetError, str(model))
        if rec is not None:
            assert all(rec.images[e.image_id] is not None for p in rec.points3D.values() for e in p.track.elements)


# ---------------------------------------------------------------------------------------------------------------
# NVM_V3 models
# ---------------------------------------------------------------------------------------------------------------


def _check_nvm_model(m: nvm.NVMModel) -> None:
    n_obs = int(m.track_length.sum())
    assert m.xyz.shape == (len(m.track_length), 3) and m.rgb.dtype == np.uint8
    assert m.image_idx.shape == m.feature_idx.shape == (n_obs,) and m.xy.shape == (n_obs, 2)
    assert ((m.image_idx >= 0) & (m.image_idx < len(m.cameras.names))).all()
    assert m.cameras.cam_from_world.shape == (len(m.cameras.names), 3, 4)


class TestNVM:
    def test_seeds(self, tmp_path):
        single = nvm.read_nvm_arrays(_write(tmp_path / "a.nvm", NVM_SINGLE))
        assert len(single.cameras.names) == 2 and single.track_length.tolist() == [2, 1, 3]
        path = _write(tmp_path / "b.nvm", NVM_MULTI)
        with pytest.raises(DatasetError, match="more than one model"):
            nvm.read_nvm_arrays(path)
        assert nvm.read_nvm_arrays(path, model=1).cameras.names == ["second.png"]
        with pytest.raises(DatasetError, match="model 2"):
            nvm.read_nvm_arrays(path, model=2)

    @FUZZ
    @given(doc=mutated(NVM_SINGLE))
    @example(doc=NVM_SINGLE + b"\xc2\xb2\n")  # "²" after the model: was ValueError (str.isdigit, int)
    def test_read_nvm_arrays(self, tmp_path, doc):
        path = _write(tmp_path / "all.nvm", doc)
        m = _expect(lambda: nvm.read_nvm_arrays(path), DatasetError, str(path))
        if m is not None:
            _check_nvm_model(m)

    @FUZZ
    @given(doc=mutated(NVM_MULTI), model=st.sampled_from([None, 0, 1, 2]))
    def test_multi_model(self, tmp_path, doc, model):
        path = _write(tmp_path / "all.nvm", doc)
        m = _expect(lambda: nvm.read_nvm_arrays(path, model), DatasetError, str(path))
        if m is not None:
            _check_nvm_model(m)
        poses = _expect(lambda: nvm.read_nvm_poses(path, model or 0), DatasetError, str(path))
        if poses is not None:
            assert all(T.shape == (3, 4) for T in poses.values())

    @FUZZ
    @given(doc=mutated(NVM_SINGLE))
    @example(doc=NVM_SINGLE.replace(b"./overcast-reference/rear/100.png", b"./"))  # was ValueError (_key)
    def test_read_nvm(self, tmp_path, doc):
        path = _write(tmp_path / "all.nvm", doc)
        rec = _expect(lambda: nvm.read_nvm(path, lambda key: (f"images/{key}.jpg", NVM_CAMERA)), DatasetError,
                      str(path))
        if rec is not None:
            assert len(rec.images) == len(nvm.read_nvm_arrays(path).cameras.names)


# ---------------------------------------------------------------------------------------------------------------
# Odometry: the dataset's odometry/ files and the RobotCar SDK's vo.csv
# ---------------------------------------------------------------------------------------------------------------


class TestOdometry:
    def test_seeds(self, tmp_path):
        table = odometry.read_odometry_file(_write(tmp_path / "snow.txt", _odometry_seed(tmp_path)))
        assert list(table) == list(zip(CMU_NAMES[:-1], CMU_NAMES[1:]))
        np.testing.assert_allclose(table[CMU_NAMES[0], CMU_NAMES[1]],
                                   odometry.relative_pose(CMU_POSES[0], CMU_POSES[1]), atol=1e-7)
        ts, poses = odometry.read_robotcar_vo(_write(tmp_path / "vo.csv", _vo_seed()))
        assert ts.tolist() == VO_TIMES and poses.shape == (4, 4, 4)

    @FUZZ
    @given(data=st.data())
    def test_odometry_file(self, tmp_path, data):
        path = _write(tmp_path / "slice1" / "odometry" / "snow.txt", data.draw(mutated(_odometry_seed(tmp_path))))
        table = _expect(lambda: odometry.read_odometry_file(path), DatasetError, str(path))
        if table is not None:
            assert all(T.shape == (3, 4) for T in table.values())

    @FUZZ
    @given(doc=mutated(_vo_seed()))
    def test_robotcar_vo(self, tmp_path, doc):
        path = _write(tmp_path / "vo" / "vo.csv", doc)
        out = _expect(lambda: odometry.read_robotcar_vo(path), DatasetError, str(path))
        if out is not None:
            ts, poses = out
            assert ts.dtype == np.int64 and (ts[1:] > ts[:-1]).all() and poses.shape == (len(ts), 4, 4)

    @FUZZ
    @given(doc=mutated(_vo_seed()))
    def test_vo_increments(self, tmp_path, doc):
        """The consumer of a vo.csv: increments at the image timestamps, or the reader's error."""
        path = _write(tmp_path / "vo" / "vo.csv", doc)
        inc = _expect(lambda: odometry.vo_increments(_vo_records(), path, np.eye(3, 4)), DatasetError, str(path))
        if inc is not None:
            assert len(inc) == 2 and inc[0] is None


# ---------------------------------------------------------------------------------------------------------------
# Correspondence .mat files (HDF5)
# ---------------------------------------------------------------------------------------------------------------

PT_I = np.array([[10.0, 12.0], [30.0, 20.0], [40.0, 41.0]])
CORR_KEYS = ("im_i_path", "im_j_path", "pt_i", "pt_j", "dist_from_center")


def _corr_seed(path: Path) -> Path:
    _write_correspondence(path, "slice1/reference/img_0.png", "slice1/snow/img_0.png", PT_I, PT_I + [4, 2], (64, 48))
    return path


def _check_corr(d: dict) -> None:
    assert isinstance(d["im_i_path"], str) and isinstance(d["im_j_path"], str)
    assert d["pt_i"].ndim == 2 and d["pt_i"].shape[1] == 2 and d["pt_i"].shape == d["pt_j"].shape
    assert d["pt_i"].dtype == d["pt_j"].dtype == np.float64


_h5_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
                           np.complex128, np.dtype("S4")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
_h5_field = st.one_of(st.just("valid"), st.just("absent"), st.just("group"), _h5_arrays,
                      st.lists(st.integers(-5, 0x11FFFF), max_size=6).map(lambda v: np.array(v, np.int64)[:, None]),
                      st.lists(st.floats(), max_size=6).map(lambda v: np.array(v, np.float64).reshape(-1, 2)
                                                            if len(v) % 2 == 0 else np.array(v)))


class TestCorrespondence:
    def test_seed(self, tmp_path):
        d = read_correspondence_file(_corr_seed(tmp_path / "c.mat"))
        assert d["im_i_path"] == "slice1/reference/img_0.png" and d["im_j_path"] == "slice1/snow/img_0.png"
        np.testing.assert_array_equal(d["pt_j"], PT_I + [4, 2])
        assert d["dist_from_center"].shape == (3,)

    @FUZZ
    @given(data=st.data())
    def test_bytes(self, tmp_path, data):
        """Byte-level corruption of a valid file: truncated, overwritten or inserted bytes."""
        seed = _corr_seed(tmp_path / "seed.mat").read_bytes()
        b = bytearray(seed)
        kind = data.draw(st.sampled_from(["cut", "flip", "overwrite", "insert", "text"]))
        if kind == "cut":
            b = b[: data.draw(st.integers(0, len(b)))]
        elif kind == "flip":
            for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
                b[i] = data.draw(st.integers(0, 255))
        elif kind in ("overwrite", "insert"):
            i = data.draw(st.integers(0, len(b)))
            junk = data.draw(st.binary(min_size=1, max_size=16))
            b[i:i + (len(junk) if kind == "overwrite" else 0)] = junk
        else:
            b = bytearray(data.draw(mutated(b"pt_i 1 2\npt_j 3 4\n")))
        path = _write(tmp_path / "slice1" / "correspondence_data" / "c.mat", bytes(b))
        d = _expect(lambda: read_correspondence_file(path), CorrespondenceFileError, str(path))
        if d is not None:
            _check_corr(d)
        samples = _expect(lambda: load_samples(tmp_path), CorrespondenceFileError, str(path))
        if samples is not None:
            assert len(samples) == 1

    @FUZZ
    @given(fields=st.fixed_dictionaries({k: _h5_field for k in CORR_KEYS}))
    @example(fields={**dict.fromkeys(CORR_KEYS, "valid"), "im_i_path": np.array([[0x110000]])})  # was ValueError (chr)
    @example(fields={**dict.fromkeys(CORR_KEYS, "valid"), "pt_i": "absent"})  # was KeyError
    def test_fields(self, tmp_path, fields):
        """Structurally wrong files: fields missing, groups, other dtypes and shapes, out-of-range characters."""
        valid = {}
        _corr_seed(tmp_path / "seed.mat")
        with h5py.File(tmp_path / "seed.mat", "r") as f:
            valid = {k: f[k][()] for k in CORR_KEYS}
        path = tmp_path / "c.mat"
        with h5py.File(path, "w") as f:
            for k, v in fields.items():
                if isinstance(v, str) and v == "group":
                    f.create_group(k)
                elif isinstance(v, str) and v == "valid":
                    f[k] = valid[k]
                elif not isinstance(v, str):
                    f[k] = v
        d = _expect(lambda: read_correspondence_file(path), CorrespondenceFileError, str(path))
        if d is not None:
            _check_corr(d)


# ---------------------------------------------------------------------------------------------------------------
# Submissions and results files
# ---------------------------------------------------------------------------------------------------------------


class TestSubmission:
    def test_seeds(self, tmp_path):
        poses = validate_submission(_write(tmp_path / "submission.txt", _submission_seed(tmp_path)),
                                    _dataset(SUB_NAMES))
        for name, T in zip(SUB_NAMES[:2], CMU_POSES):
            np.testing.assert_allclose(poses[name], T, atol=1e-8)
        assert is_failed_pose(poses[SUB_NAMES[2]])
        records = read_results(_write(tmp_path / "results.jsonl", _results_seed()))
        assert list(records) == SUB_NAMES[:2]
        np.testing.assert_allclose(pose_from_record(records[SUB_NAMES[0]]), CMU_POSES[0], atol=1e-12)
        assert pose_from_record(records[SUB_NAMES[1]]) is None

    @FUZZ
    @given(data=st.data())
    def test_read_submission(self, tmp_path, data):
        path = _write(tmp_path / "submission.txt", data.draw(mutated(_submission_seed(tmp_path))))
        poses = _expect(lambda: read_submission(path), SubmissionError, str(path))
        if poses is not None:
            assert all(T.shape == (3, 4) and np.isfinite(T).all() for T in poses.values())
        _expect(lambda: validate_submission(path, _dataset(SUB_NAMES)), SubmissionError, str(path))

    @FUZZ
    @given(doc=mutated(_results_seed()), repair=st.booleans())
    @example(doc=b'{"name": "a", "success": true}\n\xff\n', repair=False)  # was UnicodeDecodeError
    @example(doc=b'{"name": "a", "success": true, "cam_from_world": {}}\n', repair=False)  # was KeyError (pose)
    def test_read_results(self, tmp_path, doc, repair):
        path = _write(tmp_path / "results.jsonl", doc)
        records = _expect(lambda: read_results(path, repair=repair), SubmissionError, str(path))
        if records is not None:
            for name, rec in records.items():  # what localize and the figures do with the records
                assert isinstance(name, str)
                T = pose_from_record(rec)
                assert T is None or T.shape == (3, 4)
            if repair:  # a repaired file reads without repair
                assert read_results(path).keys() == records.keys()


# ---------------------------------------------------------------------------------------------------------------
# What the fuzzing found, pinned: each case failed before its fix with the exception in its comment
# ---------------------------------------------------------------------------------------------------------------


def _mat(path: Path, **fields) -> None:
    """A correspondence file from the seed with some fields replaced (None: absent, "group": an HDF5 group)."""
    _corr_seed(path)
    with h5py.File(path, "a") as f:
        for k, v in fields.items():
            del f[k]
            if isinstance(v, str):
                f.create_group(k)
            elif v is not None:
                f[k] = v


_EYE16 = " ".join("%g" % v for v in np.eye(4).ravel())
_VO_HEAD = ",".join(odometry.VO_HEADER)
REGRESSIONS = [  # id, file name, content (bytes, or a writer of the path), reader, error, message (regex)
    ("cmu-intrinsics-utf8", "intrinsics.txt", b"c0 PINHOLE 10 10 5 5 5 5\n\xff\n", read_cmu_intrinsics,
     DatasetError, r"intrinsics.txt:2: not UTF-8 text"),  # UnicodeDecodeError
    ("pose-file-utf8", "gt.txt", b"# header\n\xc3(\n", read_pose_file, DatasetError,
     r"gt.txt:2: not UTF-8 text"),  # UnicodeDecodeError
    ("name-list-utf8-cr", "test.txt", b"img_1.jpg\r\xfe\n", read_name_list, DatasetError,
     r"test.txt:2: not UTF-8 text"),  # UnicodeDecodeError (a lone \r ends a line, as in text mode)
    ("robotcar-train-no-name", "robotcar_v2_train.txt", f". {_EYE16}\n".encode(), read_robotcar_train_poses,
     DatasetError, r"robotcar_v2_train.txt:1: '\.' is not an image name"),  # ValueError: PosixPath('.') ...
    ("robotcar-intrinsics-utf8", "rear_intrinsics.txt", b"fx 1\xe9\n",
     lambda p: read_robotcar_intrinsics(p, (10, 10)), DatasetError, r"rear_intrinsics.txt:1: not UTF-8"),
    ("extrinsics-utf8", "rear_extrinsics.txt", b"1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,\x81\n", read_matrix_4x4,
     DatasetError, r"rear_extrinsics.txt:4: not UTF-8"),  # UnicodeDecodeError
    ("cmu-intrinsics-negative-size", "intrinsics.txt", b"c0 PINHOLE -1 10 5 5 5 5\n", read_cmu_intrinsics,
     DatasetError, r"intrinsics.txt:1: image size out of range"),  # was "unknown camera model 'PINHOLE'"
    ("robotcar-intrinsics-nan", "rear_intrinsics.txt", b"fx nan\nfy 1\ncx 1\ncy 1\n",
     lambda p: read_robotcar_intrinsics(p, (10, 10)), DatasetError, r":1: non-finite value"),  # read as NaN
    ("nvm-utf8", "all.nvm", NVM_SINGLE.replace(b"rear/200", b"rear/\xff200"), nvm.read_nvm_arrays, DatasetError,
     r"all.nvm:5: not UTF-8 text"),  # UnicodeDecodeError
    ("nvm-camera-without-name", "all.nvm", NVM_SINGLE.replace(b"./overcast-reference/rear/100.png", b"./"),
     nvm.read_nvm_poses, DatasetError, r"all.nvm:4: camera name '\./' is not an image name"),  # ValueError (_key)
    ("nvm-zero-quaternion", "all.nvm", NVM_SINGLE.replace(b"500.0 1 0 0 0", b"500.0 0 0 0 0"),
     nvm.read_nvm_poses, DatasetError, r"all.nvm:4: non-finite camera values or zero quaternion"),  # NaN pose
    ("odometry-utf8", "snow.txt", b"a b 1 0 0 0 0 0 0\n\xed\xa0\x80 c 1 0 0 0 0 0 0\n", odometry.read_odometry_file,
     DatasetError, r"snow.txt:2: not UTF-8 text"),  # UnicodeDecodeError
    ("odometry-missing", "none.txt", None, odometry.read_odometry_file, DatasetError,
     r"none.txt: cannot read"),  # FileNotFoundError
    ("vo-utf8", "vo.csv", f"{_VO_HEAD}\n\xff".encode("latin-1"), odometry.read_robotcar_vo, DatasetError,
     r"vo.csv:2: not UTF-8 text"),  # UnicodeDecodeError
    ("vo-timestamp-beyond-int64", "vo.csv", f"{_VO_HEAD}\n{2**63},1,0,0,0,0,0,0\n".encode(),
     odometry.read_robotcar_vo, DatasetError, r"vo.csv:2: timestamp outside the int64 range"),  # OverflowError
    ("vo-nan", "vo.csv", _vo_seed().replace(b"8.0000000000e-01", b"nan", 1),
     lambda p: odometry.vo_increments(_vo_records(), p, np.eye(3, 4)), DatasetError,
     r"vo.csv:2: non-finite motion value"),  # LinAlgError: SVD did not converge (NaN rotations after a step)
    ("vo-overflow", "vo.csv", f"{_VO_HEAD}\n2,1,1e308,0,0,0,0,0\n3,2,1e308,0,0,0,0,0\n".encode(),
     odometry.read_robotcar_vo, DatasetError, r"vo.csv: the chained motions overflow"),  # inf / NaN poses
    ("vo-timestamps-wrap", "vo.csv",
     f"{_VO_HEAD}\n{-(2**62) - 2**61},{2**62 + 2**61},0,0,0,0,0,0\n".encode(), odometry.read_robotcar_vo,
     DatasetError, r"vo.csv: timestamps do not increase"),  # accepted: np.diff wrapped around to > 0
    ("submission-utf8", "submission.txt", f"{SUB_NAMES[0]} 1 0 0 0 0 0 0\n\xff\n".encode("latin-1"),
     read_submission, SubmissionError, r"submission.txt:2: not UTF-8 text"),  # UnicodeDecodeError
    ("results-utf8", "results.jsonl", b'{"name": "a"}\n{"name": "\xff"}\n{"name": "b"}\n', read_results,
     SubmissionError, r"results.jsonl:2: malformed result line"),  # UnicodeDecodeError
    ("results-long-int", "results.jsonl", b'{"name": "a", "n": ' + b"1" * 5000 + b'}\n{"name": "b"}\n',
     read_results, SubmissionError, r"results.jsonl:1: malformed"),  # ValueError: int string conversion limit
    ("results-deep", "results.jsonl", b"[" * 100000 + b"\n{}\n", read_results, SubmissionError,
     r"results.jsonl:1: malformed"),  # RecursionError
    ("results-bad-pose", "results.jsonl",
     b'{"name": "a", "success": true, "cam_from_world": {"qvec": [1, 0, 0]}}\n{"name": "b"}\n',
     lambda p: [pose_from_record(r) for r in read_results(p).values()], SubmissionError,
     r"results.jsonl:1: malformed"),  # KeyError (tvec) / ValueError (qvec) in pose_from_record
    ("results-name-not-str", "results.jsonl", b'{"name": 5}\n{"name": "b"}\n', read_results, SubmissionError,
     r"results.jsonl:1: malformed"),  # accepted: the query name 5 (an int)
    ("mat-not-hdf5", "c.mat", b"pt_i 1 2\n", read_correspondence_file, CorrespondenceFileError,
     r"c.mat: cannot open as an HDF5"),  # OSError
    ("mat-truncated", "c.mat", lambda p: p.write_bytes(_corr_seed(p).read_bytes()[:3000]),
     read_correspondence_file, CorrespondenceFileError, r"c.mat: cannot open"),  # OSError: truncated file
    ("mat-missing-field", "c.mat", lambda p: _mat(p, pt_i=None), read_correspondence_file,
     CorrespondenceFileError, r"c.mat: no field 'pt_i'"),  # KeyError
    ("mat-field-is-group", "c.mat", lambda p: _mat(p, pt_j="group"), read_correspondence_file,
     CorrespondenceFileError, r"c.mat: field 'pt_j' is not a dataset"),  # TypeError
    ("mat-char-out-of-range", "c.mat", lambda p: _mat(p, im_i_path=np.array([[0x110000]])),
     read_correspondence_file, CorrespondenceFileError, r"'im_i_path' holds values that are not character"),
    # ValueError: chr() arg not in range(0x110000)
    ("mat-char-inf", "c.mat", lambda p: _mat(p, im_j_path=np.array([[np.inf]])), read_correspondence_file,
     CorrespondenceFileError, r"'im_j_path' holds values"),  # OverflowError: cannot convert float infinity
    ("mat-text-points", "c.mat", lambda p: _mat(p, pt_i=np.array([b"ab", b"cd"])), read_correspondence_file,
     CorrespondenceFileError, r"'pt_i' is not numeric"),  # ValueError: could not convert string to float
]


@pytest.mark.parametrize("name, content, reader, error, match", [c[1:] for c in REGRESSIONS],
                         ids=[c[0] for c in REGRESSIONS])
def test_regressions(tmp_path, name, content, reader, error, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        content(path)
    with pytest.raises(error, match=match) as info:
        reader(path)
    assert len(str(info.value).splitlines()) == 1 and str(path) in str(info.value)


def test_regression_nvm_trailer_digit_without_int(tmp_path):
    """A line "²" after the model (``str.isdigit``, no ``int``): read as a trailer, not a next model's count
    (was ValueError: invalid literal for int())."""
    m = nvm.read_nvm_arrays(_write(tmp_path / "all.nvm", NVM_SINGLE + "²\n".encode()))
    assert len(m.xyz) == 3


class TestLoaderRegressions:
    def test_cmu_duplicate_query(self, tmp_path):
        """A name listed twice: the error names the test list (was a DatasetError naming no file)."""
        root, files = _cmu_tree(tmp_path)
        _write(root / CMU_FILES[3], files[CMU_FILES[3]] * 2)
        with pytest.raises(DatasetError, match=r"test-images-slice1.txt: query img_00010_\S+ listed twice"):
            load_cmu(root)

    def test_cmu_timestamps_without_a_date(self, tmp_path):
        """Name timestamps no float holds (was OverflowError) or outside the calendar (was ValueError: year out
        of range): timestamp NaN / condition ``unknown``, as for a name without a timestamp."""
        root, files = _cmu_tree(tmp_path)
        huge = "img_00001_c0_" + "9" * 400 + "us.jpg"
        _write(root / CMU_FILES[1], files[CMU_FILES[1]] + (_pose_line(huge, CMU_POSES[2]) + "\n").encode())
        late = "img_00012_c0_99999999999999999999us.jpg"
        _write(root / "slice1" / "query" / late, b"")
        _write(root / CMU_FILES[3], files[CMU_FILES[3]] + (late + "\n").encode())
        ds = load_cmu(root)
        assert np.isnan(next(d.timestamp_s for d in ds.database if d.name == huge))
        assert [q.condition for q in ds.queries if q.name == late] == ["unknown"]

    def test_robotcar_up_axis_undetermined(self, tmp_path):
        """Reference poses whose image-up directions cancel (was ValueError from geometry.estimate_up)."""
        root, files = _rc_tree(tmp_path)
        flipped = NVM_SINGLE.replace(b"500.0 0.5 0.5 0.5 0.5", b"500.0 0 0 0 1")  # 180 degrees about z
        _write(root / RC_FILES[4], flipped)
        with pytest.raises(DatasetError, match=r"rc: no world up axis from the 2 database poses"):
            load_robotcar(root)

    def test_robotcar_test_list_name(self, tmp_path):
        """A test-list name without a file name (was ValueError: PosixPath('.') has an empty name)."""
        root, _ = _rc_tree(tmp_path)
        _write(root / RC_FILES[3], RC_TEST_LIST + b".\n")
        with pytest.raises(DatasetError, match=r"robotcar_v2_test.txt: '\.' is not an image name"):
            load_robotcar(root)
