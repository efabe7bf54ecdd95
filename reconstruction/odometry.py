"""Odometry sources of query sequences: the dataset's own ``odometry/`` files (the demo's layout), the Oxford
RobotCar SDK's visual odometry (``vo.csv``), and the ground-truth-derived increments of the ablation option.

Dataset file layout: ``ROOT/<map_id>/odometry/<condition>.txt``, lines ``name_prev name_cur qw qx qy qz tx ty tz``
= ``cur_from_prev`` (world-to-camera quaternion (w, x, y, z) and translation of the current camera frame relative
to the previous one, metres).

RobotCar ``vo.csv`` (the Oxford RobotCar SDK's format; RobotCar Seasons' queries come from Oxford RobotCar
traversals, whose ``vo/vo.csv`` users download with them): a header
``source_timestamp,destination_timestamp,x,y,z,roll,pitch,yaw`` and one line per visual-odometry step, timestamps
in microseconds, (x, y, z, roll, pitch, yaw) the source frame in the destination frame (metres, radians,
R = Rz(yaw) Ry(pitch) Rx(roll), the SDK's ``build_se3_transform``), the destination being the previous frame.
:func:`read_robotcar_vo` chains them, :func:`interpolate_poses` takes the poses at the image timestamps (linear
position, spherical-linear rotation), :func:`vo_increments` moves them to the camera with a camera -> VO-frame
transform (the dataset's ``extrinsics/`` by default).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .geometry import axis_angle_to_rotmat, compose, invert_pose, pose_from_qvec_tvec

VO_HEADER = ("source_timestamp", "destination_timestamp", "x", "y", "z", "roll", "pitch", "yaw")
from .records import DatasetError, ImageRecord, read_text, text_lines

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def perturb_odometry(cur_from_prev: np.ndarray, rng: np.random.Generator, noise_t_per_m: float,
                     noise_rot_rad: float) -> np.ndarray:
    """A noisy copy of an odometry increment: (3, 4) cur_from_prev -> (3, 4).

    The rotation is multiplied by a random rotation of sigma ``noise_rot_rad`` per axis; the displacement (the
    current camera centre in the previous camera frame) gets per-axis noise of sigma ``noise_t_per_m`` x its length.
    """
    T = np.asarray(cur_from_prev, dtype=np.float64)
    Rd, td = T[:, :3], T[:, 3]
    d = -Rd.T @ td
    d_noisy = d + rng.normal(size=3) * noise_t_per_m * np.linalg.norm(d)
    Rn = axis_angle_to_rotmat(rng.normal(size=(1, 3)) * noise_rot_rad)[0] @ Rd
    return np.concatenate([Rn, (-Rn @ d_noisy)[:, None]], axis=1)


def relative_pose(cam_from_world_prev: np.ndarray, cam_from_world_cur: np.ndarray) -> np.ndarray:
    """cur_from_prev = cur_from_world * world_from_prev: (3, 4), (3, 4) -> (3, 4)."""
    return compose(cam_from_world_cur, invert_pose(cam_from_world_prev))


# ============================================================================================================
def read_odometry_file(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """``name_prev name_cur qw qx qy qz tx ty tz`` lines -> {(name_prev, name_cur): (3, 4) cur_from_prev}.

    Raises:
        DatasetError: an unreadable file, not UTF-8 text, a line without 9 fields or with non-numeric values
            (names the file and line).
    """
    out = {}
    for lineno, line in text_lines(path):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if len(parts) != 9:
                raise ValueError
            v = np.array([float(x) for x in parts[2:]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected 'name_prev name_cur qw qx qy qz tx ty tz'") from None
        out[(parts[0], parts[1])] = pose_from_qvec_tvec(v[:4], v[4:])
    return out


def se3_from_xyzrpy(v: np.ndarray) -> np.ndarray:
    """(N, 6) x, y, z (metres), roll, pitch, yaw (radians) -> (N, 4, 4) transforms with R = Rz(yaw) Ry(pitch) Rx(roll)
    (the Oxford RobotCar SDK's ``build_se3_transform``)."""
    from scipy.spatial.transform import Rotation

    v = np.asarray(v, np.float64).reshape(-1, 6)
    T = np.tile(np.eye(4), (len(v), 1, 1))
    T[:, :3, :3] = Rotation.from_euler("ZYX", v[:, [5, 4, 3]]).as_matrix()  # intrinsic z-y'-x'' = Rz Ry Rx
    T[:, :3, 3] = v[:, :3]
    return T


def read_robotcar_vo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a RobotCar SDK ``vo.csv`` (module docstring) and chain its relative motions.

    Returns:
        timestamps: (N + 1,) int64 microseconds, increasing.
        poses: (N + 1, 4, 4) the VO frame at each timestamp in the frame of the first one (first_from_frame).
    Raises:
        DatasetError: unreadable file, not UTF-8 text, wrong header, a line without 8 finite numbers, a
            timestamp outside int64, a step whose destination is not the previous step's source, timestamps that
            do not increase, motions whose chain overflows (names the file and line).
    """
    path = Path(path)
    lines = read_text(path).splitlines()
    if not lines or tuple(c.strip() for c in lines[0].split(",")) != VO_HEADER:
        raise DatasetError(f"{path}:1: expected the header {','.join(VO_HEADER)}")
    src, dst, rel = [], [], []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            if len(parts) != 8:
                raise ValueError
            src.append(int(parts[0]))
            dst.append(int(parts[1]))
            rel.append([float(x) for x in parts[2:]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected 8 comma-separated numbers "
                               f"({','.join(VO_HEADER)})") from None
        if not (_INT64_MIN <= src[-1] <= _INT64_MAX and _INT64_MIN <= dst[-1] <= _INT64_MAX):
            raise DatasetError(f"{path}:{lineno}: timestamp outside the int64 range of microseconds")
        if not np.all(np.isfinite(rel[-1])):
            raise DatasetError(f"{path}:{lineno}: non-finite motion value")
        if len(src) > 1 and dst[-1] != src[-2]:
            raise DatasetError(f"{path}:{lineno}: destination_timestamp {dst[-1]} is not the previous line's "
                               f"source_timestamp {src[-2]}: the odometry chain is broken")
    if not src:
        raise DatasetError(f"{path}: no visual odometry step")
    T = se3_from_xyzrpy(np.array(rel))
    poses = np.empty((len(src) + 1, 4, 4))
    poses[0] = np.eye(4)
    for i in range(len(src)):
        poses[i + 1] = poses[i] @ T[i]  # first_from_source = first_from_destination @ destination_from_source
    if not np.all(np.isfinite(poses)):
        raise DatasetError(f"{path}: the chained motions overflow (translations too large)")
    ts = np.array([dst[0], *src], np.int64)
    if np.any(ts[1:] <= ts[:-1]):  # not np.diff: it wraps around for timestamps far apart
        raise DatasetError(f"{path}: timestamps do not increase")
    return ts, poses


def interpolate_poses(timestamps: np.ndarray, poses: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Poses at other timestamps: linear in position, spherical-linear in rotation (scipy ``Slerp``).

    Args:
        timestamps: (N,) increasing, any unit; poses: (N, 4, 4); query: (Q,) same unit.
    Returns:
        (Q, 4, 4); NaN where a query lies outside [timestamps[0], timestamps[-1]].
    """
    from scipy.spatial.transform import Rotation, Slerp

    t = np.asarray(timestamps, np.float64)
    q = np.asarray(query, np.float64)
    out = np.full((len(q), 4, 4), np.nan)
    inside = (q >= t[0]) & (q <= t[-1])
    if inside.any() and len(t) > 1:
        out[inside] = np.eye(4)
        out[inside, :3, :3] = Slerp(t, Rotation.from_matrix(poses[:, :3, :3]))(q[inside]).as_matrix()
        out[inside, :3, 3] = np.stack([np.interp(q[inside], t, poses[:, i, 3]) for i in range(3)], 1)
    return out


def vo_increments(records: Sequence[ImageRecord], vo_path: Path, vo_from_cam: np.ndarray) -> list[np.ndarray | None]:
    """Camera odometry of a time-ordered sequence from a RobotCar ``vo.csv``.

    Args:
        records: the sequence's images in time order (``timestamp_s``).
        vo_path: the traversal's ``vo.csv``.
        vo_from_cam: (3, 4) or (4, 4) camera -> VO-frame transform (metres).
    Returns:
        per frame, (3, 4) cur_from_prev of the camera, or None (first frame, or a frame outside the odometry).
    Raises:
        DatasetError: an unreadable ``vo.csv`` (:func:`read_robotcar_vo`).
    """
    ts, poses = read_robotcar_vo(vo_path)
    E = np.eye(4)
    E[:3] = np.asarray(vo_from_cam, np.float64)[:3]
    at = interpolate_poses(ts, poses, np.round(np.array([r.timestamp_s for r in records]) * 1e6))
    world_from_cam = at @ E
    inc: list[np.ndarray | None] = [None]
    for a, b in zip(world_from_cam[:-1], world_from_cam[1:]):
        inc.append(None if np.isnan(a).any() or np.isnan(b).any() else (np.linalg.inv(b) @ a)[:3])
    return inc


def sequence_odometry(records: Sequence[ImageRecord], root: Path, conf, rng: np.random.Generator,
                      rig_from_cam: np.ndarray | None = None) -> tuple[list[np.ndarray | None] | None, str]:
    """Odometry increments of a time-ordered sequence and where they come from.

    ``conf.source``: ``file`` (the dataset's ``<map_id>/odometry/<condition>.txt``), ``vo`` (a RobotCar
    ``vo.csv`` at ``conf.vo_csv``, ``{condition}`` replaced, relative to the dataset root), ``visual`` (visual
    odometry from the query images, :mod:`reconstruction.visual_odometry`, computed by the caller: returned as
    ``(None, "visual")``), ``auto`` (the file, else the ``vo.csv``, else visual; **never ground truth**), or ``gt``
    (ground-truth relative poses plus noise: an ablation, flagged ``synthesised-from-gt``).

    Args:
        records: the sequence's queries in time order.
        root: dataset root.
        conf: the ``odometry`` section of PFSL's configuration (``localization.pfsl.default_conf``).
        rng: generator of the synthesised / perturbed noise.
        rig_from_cam: (3, 4) camera -> vehicle transform of the sequence's camera (the dataset's extrinsics), used
            for ``vo.csv`` unless ``conf.vo_frame_from_camera`` names a 4x4 file.
    Returns:
        increments: per frame, (3, 4) cur_from_prev from the previous frame, or None (first frame, or a pair the
            source does not cover); None altogether for ``"visual"``.
        source: ``"file"``, ``"file+noise"``, ``"robotcar-vo"``, ``"visual"`` or ``"synthesised-from-gt"``.
    Raises:
        DatasetError: no usable odometry for this sequence (names what is missing).
    """
    if conf.source not in ("auto", "file", "vo", "visual", "gt"):
        raise ValueError(f"odometry.source must be auto, file, vo, visual or gt, got {conf.source!r}")
    path = Path(root) / records[0].map_id / "odometry" / f"{records[0].condition}.txt"
    vo_path = Path(root) / str(conf.vo_csv).format(condition=records[0].condition)
    if conf.source == "file" or (conf.source == "auto" and path.is_file()):
        if not path.is_file():
            raise DatasetError(f"{path}: odometry file not found (odometry.source=file)")
        table = read_odometry_file(path)
        inc = [None] + [table.get((Path(a.name).name, Path(b.name).name)) for a, b in zip(records[:-1], records[1:])]
        if conf.perturb_file:
            inc = [None if T is None else perturb_odometry(T, rng, conf.noise_t_per_m, conf.noise_rot_rad)
                   for T in inc]
        return inc, "file+noise" if conf.perturb_file else "file"
    if conf.source == "vo" or (conf.source == "auto" and vo_path.is_file()):
        if not vo_path.is_file():
            raise DatasetError(f"{vo_path}: visual odometry not found (odometry.source=vo, odometry.vo_csv)")
        if conf.vo_frame_from_camera:
            from .datasets import read_matrix_4x4

            vo_from_cam = read_matrix_4x4(Path(conf.vo_frame_from_camera))
        elif rig_from_cam is not None:
            vo_from_cam = rig_from_cam
        else:
            raise DatasetError(f"{vo_path}: no camera -> vehicle transform for camera {records[0].camera_id!r} "
                               "(the dataset's extrinsics/ or odometry.vo_frame_from_camera)")
        return vo_increments(records, vo_path, vo_from_cam), "robotcar-vo"
    if conf.source in ("auto", "visual"):  # auto never reads query ground truth
        return None, "visual"
    missing = [r.name for r in records if r.cam_from_world is None]
    if missing:
        raise DatasetError(f"odometry.source=gt for sequence {records[0].sequence}: {len(missing)} frames have no "
                           f"ground truth to synthesise it from (e.g. {missing[0]})")
    inc = [None] + [perturb_odometry(relative_pose(a.cam_from_world, b.cam_from_world), rng, conf.noise_t_per_m,
                                     conf.noise_rot_rad) for a, b in zip(records[:-1], records[1:])]
    return inc, "synthesised-from-gt"
