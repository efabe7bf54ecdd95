"""Odometry sources of query sequences: the dataset's own ``odometry/`` files (the demo's layout), and the
ground-truth-derived increments of the ablation option.

File layout: ``ROOT/<map_id>/odometry/<condition>.txt``, lines ``name_prev name_cur qw qx qy qz tx ty tz`` =
``cur_from_prev`` (world-to-camera quaternion (w, x, y, z) and translation of the current camera frame relative
to the previous one, metres).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .geometry import axis_angle_to_rotmat, compose, invert_pose, pose_from_qvec_tvec
from .records import DatasetError, ImageRecord


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
        DatasetError: a line without 9 fields or with non-numeric values (names the file and line).
    """
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
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


def sequence_odometry(records: Sequence[ImageRecord], root: Path, conf, rng: np.random.Generator
                      ) -> tuple[list[np.ndarray | None], str]:
    """Odometry increments of a time-ordered sequence and where they come from.

    Args:
        records: the sequence's queries in time order.
        root: dataset root (the file is ``root/<map_id>/odometry/<condition>.txt``).
        conf: the ``odometry`` section of :data:`default_conf`.
        rng: generator of the synthesised / perturbed noise.
    Returns:
        increments: per frame, (3, 4) cur_from_prev from the previous frame, or None (first frame, or a pair the
            file does not list).
        source: ``"file"``, ``"file+noise"`` or ``"synthesised-from-gt"``.
    Raises:
        DatasetError: no usable odometry for this sequence (names what is missing).
    """
    path = Path(root) / records[0].map_id / "odometry" / f"{records[0].condition}.txt"
    if conf.source not in ("auto", "file", "gt"):
        raise ValueError(f"odometry.source must be auto, file or gt, got {conf.source!r}")
    use_file = conf.source == "file" or (conf.source == "auto" and path.is_file())
    if use_file:
        if not path.is_file():
            raise DatasetError(f"{path}: odometry file not found (odometry.source=file)")
        table = read_odometry_file(path)
        inc = [None] + [table.get((Path(a.name).name, Path(b.name).name)) for a, b in zip(records[:-1], records[1:])]
        if conf.perturb_file:
            inc = [None if T is None else perturb_odometry(T, rng, conf.noise_t_per_m, conf.noise_rot_rad)
                   for T in inc]
        return inc, "file+noise" if conf.perturb_file else "file"
    missing = [r.name for r in records if r.cam_from_world is None]
    if missing:
        raise DatasetError(f"no odometry for sequence {records[0].sequence}: {path} does not exist and "
                           f"{len(missing)} frames have no ground truth to synthesise it from (e.g. {missing[0]})")
    inc = [None] + [perturb_odometry(relative_pose(a.cam_from_world, b.cam_from_world), rng, conf.noise_t_per_m,
                                     conf.noise_rot_rad) for a, b in zip(records[:-1], records[1:])]
    return inc, "synthesised-from-gt"
