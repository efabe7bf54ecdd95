"""Readers for the long-term localization benchmarks: Extended CMU Seasons and RobotCar Seasons.

Both layouts are read into one abstraction, :class:`SeasonsDataset`, holding :class:`ImageRecord` lists for the
database (reference traversal) and the queries. The layouts follow the public benchmarks
(Sattler et al., "Benchmarking 6DOF Outdoor Visual Localization in Changing Conditions", CVPR 2018; Toft et
al., TPAMI 2020) and ``../shared/data/README.md``:

Extended CMU Seasons (``--dataset cmu``)::

    ROOT/intrinsics.txt                               "c0 OPENCV w h fx fy cx cy k1 k2 p1 p2"
    ROOT/sliceN/{database,query}/img_XXXXX_cK_<us>us.jpg
    ROOT/sliceN/sparse/                               COLMAP model (optional; else ``fgsn-loc build-map``)
    ROOT/sliceN/ground-truth-database-images-sliceN.txt   "name qw qx qy qz cx cy cz" (camera centre)
    ROOT/sliceN/camera-poses/*.txt                    query ground truth, same format (optional)
    ROOT/sliceN/test-images-sliceN.txt                query names to localize

RobotCar Seasons (``--dataset robotcar``)::

    ROOT/images/overcast-reference/<cam>/<ts>.jpg     reference traversal
    ROOT/images/<condition>/<cam>/<ts>.jpg            queries
    ROOT/3D-models/all-merged/all.nvm                 NVM_V3 model (names ./overcast-reference/rear/<ts>.png)
    ROOT/intrinsics/<cam>_intrinsics.txt              "fx v" / "fy v" / "cx v" / "cy v"
    ROOT/extrinsics/<cam>_extrinsics.txt              4x4 comma-separated camera -> car
    ROOT/robotcar_v2_train.txt                        "cond/<cam>/<ts>.png" + row-major 4x4 camera-to-world
    ROOT/robotcar_v2_test.txt                         "<cam>/<ts>.png" queries with hidden pose

Quaternions are world-to-camera (w, x, y, z). Poses are stored as (3, 4) ``cam_from_world``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .camera import Camera
from .records import DatasetError, ImageRecord, text_lines
from .geometry import estimate_up, invert_pose, pose_from_qvec_center

logger = logging.getLogger(__name__)

# Scene groups of the real Extended CMU Seasons (Toft et al. 2020): slice number -> group.
CMU_SCENE_GROUPS = {**{i: "urban" for i in range(2, 9)}, **{i: "suburban" for i in range(9, 18)},
                    **{i: "park" for i in range(18, 26)}}
# RobotCar Seasons conditions counted as night (Sattler et al. 2018); all others are day.
ROBOTCAR_NIGHT_CONDITIONS = ("night", "night-rain")
ROBOTCAR_REFERENCE = "overcast-reference"
_CMU_NAME = re.compile(r"^img_(\d+)_(c\d+)_(\d+)us\.(jpg|png)$")


@dataclass
class MapSource:
    """Where a map comes from: a COLMAP model folder, or an NVM file; plus the database images' folder."""

    map_id: str
    model_path: Path
    image_dir: Path
    format: str  # "colmap" or "nvm"
    model: int | None = None  # nvm: which model of the file (0-based); None: the file must hold one

    def exists(self) -> bool:
        return self.model_path.exists()


@dataclass
class SeasonsDataset:
    """A benchmark dataset: database images with poses, queries, maps, and the submission conventions.

    Attributes:
        kind: ``"cmu"`` or ``"robotcar"``.
        root: dataset root folder.
        database: reference images with known ``cam_from_world``.
        queries: images to localize (ground truth where published).
        maps: map_id -> :class:`MapSource`.
        up: (3,) world up direction (unit), estimated from the database poses by the loaders
            (:func:`reconstruction.geometry.estimate_up`); used by GSMC, PFSL and the labelled maps.
        rig_from_cam: camera_id -> (3, 4) camera -> vehicle transform, where the dataset gives one.
    """

    kind: str
    root: Path
    database: list[ImageRecord]
    queries: list[ImageRecord]
    maps: dict[str, MapSource]
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    rig_from_cam: dict[str, np.ndarray] = field(default_factory=dict)

    def query_by_name(self) -> dict[str, ImageRecord]:
        return {q.name: q for q in self.queries}

    def database_for_map(self, map_id: str) -> list[ImageRecord]:
        return [d for d in self.database if d.map_id == map_id]


# ---------------------------------------------------------------------------------------------------------------
# Small file parsers (each error names the file and the line)
# ---------------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    out = []
    for i, line in text_lines(path):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((i, line))
    return out


def _image_key(path: Path, lineno: int | None, name: str, suffix: str = "") -> str:
    """``name`` with its extension replaced by ``suffix``; a name without a file name (``.``, ``/``) is an error."""
    try:
        return str(Path(name).with_suffix(suffix))
    except ValueError:
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        raise DatasetError(f"{where}: {name!r} is not an image name") from None


def read_pose_file(path: Path) -> dict[str, np.ndarray]:
    """Read ``name qw qx qy qz cx cy cz`` lines (world-to-camera quaternion, camera centre) into cam_from_world.

    Raises:
        DatasetError: missing or unreadable file, not UTF-8 text, a line without exactly 8 fields,
            non-numeric or non-finite values, a zero quaternion, or a name given twice (names the file and line).
    """
    poses: dict[str, np.ndarray] = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 8:
            raise DatasetError(
                f"{path}:{lineno}: expected 'name qw qx qy qz cx cy cz' (1 name + 7 numbers), got {len(parts) - 1} numbers"
            )
        try:
            vals = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric pose value in {line!r}") from None
        if not np.all(np.isfinite(vals)) or np.linalg.norm(vals[:4]) < 1e-8:
            raise DatasetError(f"{path}:{lineno}: non-finite values or zero quaternion in {line!r}")
        if parts[0] in poses:
            raise DatasetError(f"{path}:{lineno}: image {parts[0]} listed twice")
        poses[parts[0]] = pose_from_qvec_center(vals[:4], vals[4:])
    return poses


def read_name_list(path: Path) -> list[str]:
    """Read a list of image names (first token per non-empty line; ``#`` comments allowed).

    Raises:
        DatasetError: missing or unreadable file, or not UTF-8 text (names the file and line).
    """
    return [line.split()[0] for _, line in _read_lines(path)]


def read_cmu_intrinsics(path: Path) -> dict[str, Camera]:
    """Read ``cK MODEL w h params...`` lines (``#`` comments allowed) into camera_id -> :class:`Camera`.

    Raises:
        DatasetError: missing or unreadable file, not UTF-8 text, a line with fewer than 5 fields, non-numeric,
            non-finite or out-of-range values (an image size outside 1 to 2^31 - 1), an unknown model, a wrong number of
            parameters, no camera at all; each names the file (and the line).
    """
    import pycolmap

    cameras = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) < 5:
            raise DatasetError(f"{path}:{lineno}: expected 'camera_id MODEL width height params...', got {line!r}")
        cam_id, model = parts[0], parts[1]
        try:
            width, height = int(parts[2]), int(parts[3])
            params = tuple(float(v) for v in parts[4:])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric intrinsics in {line!r}") from None
        if not (0 < width < 2**31 and 0 < height < 2**31) or not np.all(np.isfinite(params)):
            raise DatasetError(f"{path}:{lineno}: image size out of range (1 to 2^31 - 1) or non-finite "
                               f"parameters in {line!r}")
        try:
            cam = pycolmap.Camera(model=model, width=width, height=height, params=list(params))
        except Exception:
            raise DatasetError(f"{path}:{lineno}: unknown camera model {model!r}") from None
        if not cam.verify_params():
            raise DatasetError(f"{path}:{lineno}: model {model} needs parameters ({cam.params_info}), got {len(params)}")
        cameras[cam_id] = Camera(model, width, height, params)
    if not cameras:
        raise DatasetError(f"{path}: no camera defined")
    return cameras


def _cmu_timestamp(name: str) -> float:
    """Seconds from a CMU name's ``<us>us``; NaN when the name has none (or one no float holds)."""
    m = _CMU_NAME.match(name)
    try:
        return int(m.group(3)) * 1e-6 if m else float("nan")
    except (OverflowError, ValueError):  # more digits than a float (or Python's int parser) takes
        return float("nan")


def _date_condition(timestamp_s: float) -> str:
    if not np.isfinite(timestamp_s):
        return "unknown"
    try:
        return datetime.fromtimestamp(timestamp_s, tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):  # a timestamp outside the calendar
        return "unknown"


def _condition_from_pose_file(path: Path) -> str | None:
    """``slice-2-gt-query-images-snow.txt`` -> ``snow``; None when the name carries no condition."""
    m = re.search(r"query-images-(.+)$", path.stem)
    return m.group(1) if m else None


def _image_size(path: Path) -> tuple[int, int]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"{path}: cannot read image (missing or corrupt)")
    return img.shape[1], img.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Extended CMU Seasons
# ---------------------------------------------------------------------------------------------------------------


def list_cmu_slices(root: Path) -> list[int]:
    """The slice numbers present under ``root`` (folders ``sliceN``), sorted."""
    return sorted(int(p.name[5:]) for p in Path(root).glob("slice*") if p.is_dir() and p.name[5:].isdigit())


def load_cmu(root: str | Path, slices: Sequence[int] | None = None, scene_groups: dict[int, str] | None = None) -> SeasonsDataset:
    """Read an Extended CMU Seasons tree.

    Query conditions come from the ground-truth file names (``...-query-images-<condition>.txt``); a query
    without such a file gets the date of its timestamp as condition. Scene groups come from the slice number
    (:data:`CMU_SCENE_GROUPS`; slices outside it form the group ``other``).

    Args:
        root: dataset root with ``intrinsics.txt`` and ``sliceN/`` folders.
        slices: slice numbers to read (default: all present).
        scene_groups: slice -> group override.
    Raises:
        DatasetError: missing/malformed files, a test image that does not exist or is listed twice, an empty
            query list.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    groups_of = CMU_SCENE_GROUPS if scene_groups is None else scene_groups
    cameras = read_cmu_intrinsics(root / "intrinsics.txt")
    slices = list_cmu_slices(root) if slices is None else list(slices)
    if not slices:
        raise DatasetError(f"{root}: no sliceN folders")
    database, queries, maps = [], [], {}
    for s in slices:
        sdir = root / f"slice{s}"
        if not sdir.is_dir():
            raise DatasetError(f"{sdir}: slice folder not found")
        map_id = f"slice{s}"
        groups = (groups_of.get(s, "other"),)

        def camera_of(name: str, src: Path) -> tuple[str, Camera]:
            parts = name.split("_")
            cam_id = parts[2] if len(parts) > 2 else ""
            if cam_id not in cameras:
                raise DatasetError(f"{src}: image {name} has camera id {cam_id!r}, not in {root / 'intrinsics.txt'}")
            return cam_id, cameras[cam_id]

        db_file = sdir / f"ground-truth-database-images-slice{s}.txt"
        for name, pose in read_pose_file(db_file).items():
            cam_id, cam = camera_of(name, db_file)
            path = sdir / "database" / name
            database.append(ImageRecord(name, f"{map_id}/database/{name}", path, cam, cam_id, "reference", groups,
                                        _cmu_timestamp(name), map_id, pose))
        gt: dict[str, tuple[np.ndarray, str | None]] = {}
        pose_dir = sdir / "camera-poses"
        for f in sorted(pose_dir.glob("*.txt")) if pose_dir.is_dir() else []:
            cond = _condition_from_pose_file(f)
            for name, pose in read_pose_file(f).items():
                gt[name] = (pose, cond)
        test_file = sdir / f"test-images-slice{s}.txt"
        names = read_name_list(test_file)
        if not names:
            raise DatasetError(f"{test_file}: empty query list")
        if len(set(names)) < len(names):
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise DatasetError(f"{test_file}: query {twice} listed twice")
        for name in names:
            cam_id, cam = camera_of(name, test_file)
            path = sdir / "query" / name
            if not path.is_file():
                raise DatasetError(f"{test_file}: query image {name} not found at {path}")
            pose, cond = gt.get(name, (None, None))
            ts = _cmu_timestamp(name)
            queries.append(ImageRecord(name, f"{map_id}/query/{name}", path, cam, cam_id, cond or _date_condition(ts),
                                       groups, ts, map_id, pose))
        maps[map_id] = MapSource(map_id, sdir / "sparse", sdir / "database", "colmap")
    _check_unique(root, queries, "query")
    logger.info("CMU: %d slices, %d database images, %d queries.", len(slices), len(database), len(queries))
    return SeasonsDataset("cmu", root, database, queries, maps, up=_database_up(root, database))


# ---------------------------------------------------------------------------------------------------------------
# RobotCar Seasons
# ---------------------------------------------------------------------------------------------------------------


def read_robotcar_intrinsics(path: Path, image_size: tuple[int, int]) -> Camera:
    """Read ``fx v`` / ``fy v`` / ``cx v`` / ``cy v`` lines into a PINHOLE camera (images are undistorted).

    Raises:
        DatasetError: missing or unreadable file, not UTF-8 text, a line that is not ``key value``, a non-numeric
            or non-finite value, a missing key; each names the file (and the line).
    """
    vals = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected 'key value', got {line!r}")
        try:
            vals[parts[0]] = float(parts[1])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric value in {line!r}") from None
        if not np.isfinite(vals[parts[0]]):
            raise DatasetError(f"{path}:{lineno}: non-finite value in {line!r}")
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in vals]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}")
    return Camera("PINHOLE", image_size[0], image_size[1], (vals["fx"], vals["fy"], vals["cx"], vals["cy"]))


def read_matrix_4x4(path: Path) -> np.ndarray:
    """Read a 4x4 matrix written as 4 comma- (or space-) separated rows.

    Raises:
        DatasetError: missing or unreadable file, not UTF-8 text, a non-numeric value, not 4 rows of 4 values, a
            non-finite value; each names the file (and the line).
    """
    rows = []
    for lineno, line in _read_lines(path):
        try:
            rows.append([float(v) for v in re.split(r"[,\s]+", line) if v])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric value in {line!r}") from None
    M = np.array(rows) if rows and all(len(r) == 4 for r in rows) else None
    if M is None or M.shape != (4, 4):
        raise DatasetError(f"{path}: expected a 4x4 matrix")
    if not np.all(np.isfinite(M)):
        raise DatasetError(f"{path}: non-finite value in the 4x4 matrix")
    return M


def read_robotcar_train_poses(path: Path) -> dict[str, np.ndarray]:
    """``cond/cam/<ts>.png`` + 16 numbers (row-major 4x4 camera-to-world) -> key ``cond/cam/<ts>`` -> cam_from_world.

    Raises:
        DatasetError: missing or unreadable file, not UTF-8 text, a line without a name and 16 numbers, a
            non-numeric value, a 3x3 block that is not a rotation, a name that is not an image name; each names
            the file and the line.
    """
    poses = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 17:
            raise DatasetError(f"{path}:{lineno}: expected name + 16 numbers (4x4 camera-to-world), got {len(parts) - 1}")
        try:
            M = np.array([float(v) for v in parts[1:]]).reshape(4, 4)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric value") from None
        R = M[:3, :3]
        if not np.all(np.isfinite(M)) or abs(np.linalg.det(R) - 1) > 1e-3:
            raise DatasetError(f"{path}:{lineno}: the 3x3 block is not a rotation")
        poses[_image_key(path, lineno, parts[0])] = invert_pose(M[:3, :])
    return poses


def load_robotcar(root: str | Path, cameras: Sequence[str] = ("rear",), nvm_model: int | None = None) -> SeasonsDataset:
    """Read a RobotCar Seasons tree.

    Database = ``images/overcast-reference/<cam>`` with poses from the NVM model. Queries = every image in the
    other condition folders (as in RobotCar Seasons v1) for the given cameras; ground truth from
    ``robotcar_v2_train.txt`` where listed. Groups: ``night`` for night/night-rain, else ``day``.
    ``nvm_model``: which model of the NVM file (0-based) gives the database poses and the map; None (RobotCar
    Seasons ships one model): the file must hold one (:func:`reconstruction.nvm.read_nvm_poses`).

    Raises:
        DatasetError: missing/malformed files, a multi-model NVM file without ``nvm_model``, or no query image.
    """
    from .nvm import read_nvm_poses

    root = Path(root)
    img_root = root / "images"
    if not img_root.is_dir():
        raise DatasetError(f"{img_root}: images folder not found")
    nvm_path = root / "3D-models" / "all-merged" / "all.nvm"
    map_id = "all-merged"
    cams: dict[str, Camera] = {}
    rig_from_cam = {}
    for cam_id in cameras:
        imgs = sorted((img_root / ROBOTCAR_REFERENCE / cam_id).glob("*.jpg"))
        if not imgs:
            raise DatasetError(f"{img_root / ROBOTCAR_REFERENCE / cam_id}: no reference images")
        cams[cam_id] = read_robotcar_intrinsics(root / "intrinsics" / f"{cam_id}_intrinsics.txt", _image_size(imgs[0]))
        ext = root / "extrinsics" / f"{cam_id}_extrinsics.txt"
        if ext.is_file():
            rig_from_cam[cam_id] = read_matrix_4x4(ext)[:3, :]
    gt_file = root / "robotcar_v2_train.txt"
    gt = read_robotcar_train_poses(gt_file) if gt_file.is_file() else {}
    db_poses = read_nvm_poses(nvm_path, nvm_model) if nvm_path.is_file() else {}

    database, queries = [], []
    for cond_dir in sorted(p for p in img_root.iterdir() if p.is_dir()):
        cond = cond_dir.name
        is_ref = cond == ROBOTCAR_REFERENCE
        groups = ("night",) if cond in ROBOTCAR_NIGHT_CONDITIONS else ("day",)
        for cam_id in cameras:
            for path in sorted((cond_dir / cam_id).glob("*.jpg")):
                ts = int(path.stem) * 1e-6 if path.stem.isdigit() else float("nan")
                rel = f"{cond}/{cam_id}/{path.stem}"
                name = f"{cam_id}/{path.name}"
                if is_ref:
                    pose = db_poses.get(rel)
                    if pose is None:
                        continue  # a reference image that is not part of the model
                    database.append(ImageRecord(name, f"images/{rel}.jpg", path, cams[cam_id], cam_id, cond, groups,
                                                ts, map_id, pose))
                else:
                    queries.append(ImageRecord(name, f"images/{rel}.jpg", path, cams[cam_id], cam_id, cond, groups,
                                               ts, map_id, gt.get(rel)))
    if not queries:
        raise DatasetError(f"{img_root}: no query images outside {ROBOTCAR_REFERENCE}/")
    test_file = root / "robotcar_v2_test.txt"
    if test_file.is_file():
        names = {q.name for q in queries}
        for n in read_name_list(test_file):
            if _image_key(test_file, None, n, ".jpg") not in names and Path(n).parts[0] in cameras:
                raise DatasetError(f"{test_file}: test image {n} not found under {img_root}/<condition>/")
    _check_unique(root, queries, "query")
    logger.info("RobotCar: %d database images, %d queries.", len(database), len(queries))
    maps = {map_id: MapSource(map_id, nvm_path, img_root, "nvm", nvm_model)}
    return SeasonsDataset("robotcar", root, database, queries, maps, up=_database_up(root, database),
                          rig_from_cam=rig_from_cam)


def _check_unique(root: Path, records: list[ImageRecord], what: str) -> None:
    seen: dict[str, str] = {}
    for r in records:
        if r.name in seen:
            raise DatasetError(f"{root}: {what} name {r.name} appears twice ({seen[r.name]} and {r.key}); the "
                               "submission format needs unique names")
        seen[r.name] = r.key


def _database_up(root: Path, database: list[ImageRecord]) -> np.ndarray:
    """The world up axis of a dataset, estimated from its database poses (:func:`geometry.estimate_up`).

    Raises:
        DatasetError: poses whose image-up directions cancel out (names the dataset root).
    """
    poses = [r.cam_from_world for r in database if r.cam_from_world is not None]
    try:
        up = estimate_up(np.array(poses)) if poses else np.array([0.0, 0.0, 1.0])
    except ValueError as e:
        raise DatasetError(f"{root}: no world up axis from the {len(poses)} database poses ({e})") from None
    logger.info("World up axis (from %d database poses): (%.3f, %.3f, %.3f)", len(poses), *up)
    return up


def parse_slices(text: str | None) -> list[int] | None:
    """``"2,3,4"`` -> [2, 3, 4]; None or empty -> None (all slices)."""
    if not text:
        return None
    try:
        return [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"slices must be comma-separated integers, got {text!r}") from None


def load_dataset(kind: str, root: str | Path, slices: Sequence[int] | None = None,
                 nvm_model: int | None = None) -> SeasonsDataset:
    """Read a dataset by kind (``"cmu"`` or ``"robotcar"``); ``slices`` applies to CMU only, ``nvm_model`` (which
    model of a multi-model NVM file; None: it must hold one) to RobotCar only."""
    if kind == "cmu":
        return load_cmu(root, slices)
    if kind == "robotcar":
        return load_robotcar(root, nvm_model=nvm_model)
    raise ValueError(f"unknown dataset kind {kind!r}; expected 'cmu' or 'robotcar'")
